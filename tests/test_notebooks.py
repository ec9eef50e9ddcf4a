"""The notebooks run top to bottom (on tiny settings) in the test suite."""

from pathlib import Path

import pytest

REAL_DATA_NOTEBOOKS = {"02_your_data.ipynb"}  # need $MEDSEG_REAL_DATA; run by test_your_data_notebook_runs
NOTEBOOKS = sorted(
    p for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb") if p.name not in REAL_DATA_NOTEBOOKS
)


def execute(path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "store notebooks without outputs"
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("MEDSEG_NOTEBOOK_QUICK", "1")
    execute(path)


@pytest.mark.slow
@pytest.mark.real
def test_your_data_notebook_runs(real_data, monkeypatch):
    monkeypatch.setenv("MEDSEG_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MEDSEG_REAL_DATA", str(real_data))
    monkeypatch.delenv("MEDSEG_MODEL", raising=False)  # train the notebook's own small model
    execute(Path(__file__).resolve().parents[1] / "notebooks" / "02_your_data.ipynb")
