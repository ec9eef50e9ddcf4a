"""Fine-tuning (``train.init_from``): read the source model, start the new network from its
weights (:mod:`medseg.nn.transfer`), record what was carried over, and hold the encoder fixed
for the first ``train.freeze_encoder_epochs`` epochs.

The source is read once, before the dataset is planned (its preprocessing may be kept:
:mod:`medseg.planning.inherit`); a resumed run never reads it (its own ``last.pt`` holds the
weights). What was loaded, adapted and skipped goes to ``init_report.txt`` in the run folder
and to MLflow (that file, ``init.*`` params, and the ``init_from`` lineage tags).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from medseg.config.plan import Plan, Preprocessing
from medseg.config.schema import ExperimentConfig
from medseg.errors import MedsegError
from medseg.io.write import write_text
from medseg.nn.checkpoint import Checkpoint, load_checkpoint
from medseg.nn.parts import encoder_parameters
from medseg.nn.transfer import TransferReport, match_channels, transfer_weights
from medseg.planning.inherit import preprocessing_differences
from medseg.tracking.lineage import init_tags
from medseg.tracking.registry import fetch_model
from medseg.tracking.store import sqlite_path
from medseg.tracking.tracker import resolve_uri
from medseg.training.state import RunContext

MLFLOW_SCHEMES = ("runs:/", "models:/")
REPORT_FILE = "init_report.txt"
SHOWN = 3  # skipped / new tensors printed before "N more"
SOURCES = (
    "give a best.pt/last.pt, a run folder of 'medseg train', or an MLflow model (runs:/<id>/model, "
    "models:/<name>/<version>)"
)


@dataclass(frozen=True)
class InitSource:
    """The model a run starts from: ``given`` as written in ``train.init_from``, ``where`` the
    checkpoint file read (absolute) or the MLflow URI, and the checkpoint."""

    given: str
    where: str
    checkpoint: Checkpoint

    @property
    def preprocess(self) -> Preprocessing:
        return self.checkpoint.preprocess

    @property
    def run_id(self) -> str | None:
        """The MLflow run that trained the source: as its checkpoint records it, else a
        ``runs:/<id>/...`` URI's id."""
        if self.checkpoint.mlflow_run_id:
            return self.checkpoint.mlflow_run_id
        if not self.given.startswith("runs:/"):
            return None
        return self.given.split("/")[1] or None

    @property
    def family(self) -> str:
        """The source's network (``model.name``)."""
        ckpt = self.checkpoint
        return (ckpt.plan.network if ckpt.plan is not None else ckpt.config.model).name


def read_init_source(cfg: ExperimentConfig) -> InitSource:
    """The checkpoint ``train.init_from`` names: a file, a run folder's ``best.pt``, or the
    checkpoint of an MLflow model in the store the config trains into (``tracking.uri``, else
    ``$MLFLOW_TRACKING_URI``, else its default store), loaded with ``weights_only=True``.

    Raises:
        MedsegError: no such file, folder or model; not a medseg checkpoint.
    """
    given = str(cfg.train.init_from)
    if given.startswith(MLFLOW_SCHEMES):
        return InitSource(given, given, _fetch(given, cfg))
    path = Path(given).expanduser()
    if path.is_dir():
        path = path / "best.pt"
        if not path.is_file():
            raise MedsegError(f"train.init_from: {given}: a folder without best.pt; {SOURCES}")
    elif not path.is_file():
        raise MedsegError(f"train.init_from: {given}: no such checkpoint or run folder; {SOURCES}")
    return InitSource(given, str(path.resolve()), load_checkpoint(path))


def _fetch(uri: str, cfg: ExperimentConfig) -> Checkpoint:
    """The checkpoint behind an MLflow model URI (:func:`medseg.tracking.registry.fetch_model`).

    Raises:
        MedsegError: the store is a SQLite file that does not exist, or the model cannot be fetched.
    """
    store = resolve_uri(cfg.tracking.uri, Path(cfg.train.output_dir))
    db = sqlite_path(store)
    if db is not None and not db.is_file():
        raise MedsegError(
            f"train.init_from: {uri}: no MLflow store at {db}; set tracking.uri (--tracking-uri) or "
            "MLFLOW_TRACKING_URI to the store the model was logged in"
        )
    with tempfile.TemporaryDirectory(prefix="medseg-init-") as tmp:
        return load_checkpoint(fetch_model(uri, store, Path(tmp)), uri)


def initialise(net: nn.Module, plan: Plan, source: InitSource, new_channels: str) -> TransferReport:
    """Copy the source's weights into ``net`` (the network of ``plan``), in place
    (:func:`medseg.nn.transfer.transfer_weights`; input channels matched to the plan's).

    Raises:
        MedsegError: not one tensor of the source fits ``net`` (another network family).
    """
    pre = source.preprocess
    match = match_channels(pre.channels, pre.in_channels, plan.preprocess.channels)
    report = transfer_weights(net, source.checkpoint.state_dict, plan.network.name, match, new_channels)
    if report.count("loaded") + report.count("adapted") == 0:
        raise MedsegError(
            f"train.init_from: {source.given}: none of its tensors fits this network (source {source.family}, "
            f"here {plan.network.name}); fine-tune from a model of the same network (model.name and model.channels)"
        )
    return report


def record_init(run: RunContext, source: InitSource, plan: Plan, report: TransferReport) -> None:
    """The differences in preprocessing as one warning line (always), the report's summary (with
    progress output), ``init_report.txt`` in the run folder, and the MLflow record: that file,
    ``init.*`` params and the lineage tags (rank 0 only)."""
    ckpt = source.checkpoint
    diffs = preprocessing_differences(source.preprocess, plan.preprocess)
    if diffs:
        print(
            f"warning: train.init_from: this run preprocesses otherwise than its source: {'; '.join(diffs)}; set "
            "train.init_keep_preprocessing=true to keep the source's",
            file=sys.stderr,
        )
    origin = f"epoch {ckpt.epoch}" + (f", MLflow run {source.run_id}" if source.run_id else "")
    head = [f"init_from: {source.where} ({origin})", *(f"preprocessing differs: {d}" for d in diffs)]
    path = run.run_dir / REPORT_FILE
    write_text("\n".join(head) + "\n" + report.text(), path)
    if run.progress:
        print("\n".join(summary_lines(source, origin, report, path)), file=sys.stderr)
    run.tracker.log_params(
        {f"init.{s}": str(report.count(s)) for s in ("loaded", "adapted", "skipped", "new", "unused")}
        | {"init.input_channels": report.channels, "init.source_epoch": str(ckpt.epoch)}
    )
    run.tracker.set_tags(init_tags(source.where, source.run_id))
    run.tracker.log_artifact(path)


def summary_lines(source: InitSource, origin: str, report: TransferReport, path: Path) -> list[str]:
    """A few lines for the terminal: counts, channel matching, the first skipped or new tensors."""
    odd = [n for n in report.notes if n.status in ("skipped", "new")]
    lines = [
        f"init_from {source.where} ({origin}): {report.summary()}",
        f"  input channels {report.channels}",
        *(f"  {n.status} {n.name}: {n.detail}" for n in odd[:SHOWN]),
    ]
    more = f"{len(odd) - SHOWN} more; " if len(odd) > SHOWN else ""
    return [*lines, f"  {more}full report: {path}"]


class EncoderFreeze:
    """The encoder's parameters (:func:`medseg.nn.parts.encoder_parameters`) without gradients
    for epochs 1 to ``epochs``, trained again from the next epoch on. Set per epoch from the
    epoch number alone, so a resumed run freezes exactly as the uninterrupted one."""

    def __init__(self, net: nn.Module, family: str, epochs: int) -> None:
        self.epochs = epochs
        self.params = list(encoder_parameters(net, family).values()) if epochs else []

    @property
    def active(self) -> bool:
        """Whether some epochs freeze the encoder."""
        return bool(self.params)

    def apply(self, epoch: int) -> dict[str, float]:
        """Freeze or unfreeze for ``epoch``; the ``encoder_frozen`` metric (1/0), none when inactive."""
        if not self.active:
            return {}
        frozen = epoch <= self.epochs
        for p in self.params:
            p.requires_grad_(not frozen)
        return {"encoder_frozen": float(frozen)}
