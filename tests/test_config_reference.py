from pathlib import Path

from medseg.config.reference import render

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text()
    assert render(text) == text, "README config reference is stale: run `python -m medseg.config.reference`"
    assert "`loss.alpha`" in text and "`inference.tta`" in text
