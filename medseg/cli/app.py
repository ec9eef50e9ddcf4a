"""Command line: the Typer app. Each command (``medseg/cli/commands``) parses its arguments and
calls one library function.

Heavy imports (torch, monai, mlflow) happen inside the commands so ``medseg --help`` is instant.
Every error is one ``error:`` line on stderr, without a traceback, and one exit code for all
commands: 0 done; 1 some inputs failed, the rest done; 2 user or config error (a
:class:`medseg.errors.MedsegError`, a bad option value, a missing argument); 3 internal error
(``medseg --debug COMMAND``, ``COMMAND --debug`` or ``MEDSEG_DEBUG=1`` print its traceback).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from medseg import __version__
from medseg.cli.commands.data import check, plan, show, synth
from medseg.cli.commands.evaluate import evaluate
from medseg.cli.commands.export import export
from medseg.cli.commands.predict import predict
from medseg.cli.commands.review import review
from medseg.cli.commands.train import demo, runs, train, tune
from medseg.cli.common import CLICK_ERROR, DEBUG_HELP, EXIT_CODES, USAGE_ERROR, cut, usage_error_line
from medseg.cli.examples import examples_section
from medseg.cli.options import CONTEXT_SETTINGS
from medseg.errors import MedsegError
from medseg.runtime.allocator import tune_allocator


class MedsegGroup(TyperGroup):
    """The root command: the parser's usage errors (bad option value, missing argument, unknown
    option) as one ``error:`` line and exit 2, like every other user error, instead of Click's usage box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; the exit code is returned (``standalone_mode=False``) or exited with."""
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0  # a command's typer.Exit(code) comes back as its code
        except USAGE_ERROR as err:
            code = err.exit_code  # type: ignore[attr-defined]
            if type(err).__name__ != "NoArgsIsHelpError":  # `medseg` alone: the help is printed already (as Typer does)
                typer.echo(f"error: {usage_error_line(err)}", err=True)
        except CLICK_ERROR as err:
            code = err.exit_code  # type: ignore[attr-defined]
            typer.echo(f"error: {cut(str(err.format_message()))}", err=True)  # type: ignore[attr-defined]
        except typer.Abort:
            code = 130
            typer.echo("error: interrupted", err=True)
        if not standalone_mode:
            return code
        sys.exit(code)


app = typer.Typer(
    cls=MedsegGroup,
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    epilog=EXIT_CODES,
    context_settings=CONTEXT_SETTINGS,
    help="3D lesion segmentation: train, predict, evaluate; lesion recall tracked in MLflow.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """medseg command line."""


for command in (
    synth,
    train,
    predict,
    evaluate,
    review,
    tune,
    check,
    plan,
    show,
    demo,
    runs,
    export,
):  # -h as --help; exit codes, then examples
    app.command(epilog=f"{EXIT_CODES}\n\n{examples_section(command.__name__)}", context_settings=CONTEXT_SETTINGS)(
        command
    )


def main() -> None:
    """Console entry point."""
    import logging
    import os
    import warnings

    try:  # glibc: large tensors reuse the heap instead of mmap/munmap every step (MEDSEG_MALLOC=default: off)
        tune_allocator()
    except MedsegError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)

    os.environ.setdefault(
        "MLFLOW_LOGGING_LEVEL", "WARNING"
    )  # MLflow's INFO lines (database setup, monitors) are noise here
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MONAI announces a future default of Orientationd; it does not change our RAS reorientation.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\..*")
    warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
    # with pydicom installed (medseg[dicom]) MONAI builds its DICOM readers in every LoadImage; medseg reads DICOM
    # with SimpleITK/GDCM (medseg.io.readers), so their missing GPU decoder is not the user's business
    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)  # the same, as a log line
    app()


if __name__ == "__main__":
    main()
