from pathlib import Path

from medseg.config.reference import PAGE, page


def test_config_reference_page_is_current():
    assert Path(__file__).resolve().parents[1] / "docs" / "reference" / "config.md" == PAGE
    text = PAGE.read_text()
    assert page() == text, "docs/reference/config.md is stale: run `python -m medseg.config.reference`"
    assert "`loss.alpha`" in text and "`inference.tta`" in text and "## `tracking`" in text
