"""Command line: the Typer app. Each command (``medseg/cli/commands``) parses its arguments and
calls one library function.

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
A :class:`medseg.errors.MedsegError` is printed as one ``error:`` line and exits non-zero.
"""

from __future__ import annotations

import typer

from medseg import __version__
from medseg.cli.commands.data import check, plan, show, synth
from medseg.cli.commands.predict import evaluate, predict
from medseg.cli.commands.train import demo, runs, train, tune

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="3D lesion segmentation: train, predict, evaluate; lesion recall tracked in MLflow.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """medseg command line."""


for command in (synth, train, predict, evaluate, tune, check, plan, show, demo, runs):
    app.command()(command)


def main() -> None:
    """Console entry point."""
    import os
    import warnings

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's INFO lines (database setup, monitors) are noise here
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MONAI announces a future default of Orientationd; it does not change our RAS reorientation.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\..*")
    warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
    app()


if __name__ == "__main__":
    main()
