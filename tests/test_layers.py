"""The package layout is the pipeline: the import-linter layers contract in pyproject.toml holds,
only ``medseg/cli`` imports inside functions, and ``import medseg.cli.app`` stays light."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"


def test_layers_contract_is_kept():
    proc = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
    )
    assert "1 kept, 0 broken" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_a_broken_contract_is_reported(tmp_path):
    """The contract test can fail: an upward import (io -> training) breaks it."""
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "medseg", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "medseg" / "io" / "upward.py").write_text("from medseg.training.run import train\n")
    (copy / "pyproject.toml").write_text((PACKAGE.parent / "pyproject.toml").read_text())
    proc = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=copy,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert "BROKEN" in proc.stdout and "medseg.io.upward" in proc.stdout, proc.stdout[-2000:]


def function_level_imports(path: Path) -> list[str]:
    """``file:line`` of every import statement inside a function or method."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}")
    return found


def test_imports_sit_at_module_top_below_cli():
    inside = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if "cli" not in path.relative_to(PACKAGE).parts
        for hit in function_level_imports(path)
    ]
    assert inside == []


def test_cli_app_import_is_light():
    code = "import sys, medseg.cli.app; print(sorted(m for m in ('torch', 'monai', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# an MLflow model flavour is a model format: the pyfunc wrapper of a checkpoint lives with inference
MLFLOW_OUTSIDE_TRACKING = {"medseg/inference/pyfunc.py", "medseg/inference/pyfunc_entry.py"}


def test_mlflow_is_called_through_tracking_only():
    """Every MLflow call of training, calibration, ensembles and the demo goes through medseg.tracking."""
    users = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                users.add(path.relative_to(PACKAGE.parent).as_posix())
    outside = {u for u in users if not u.startswith("medseg/tracking/")}
    assert outside == MLFLOW_OUTSIDE_TRACKING
