"""A trained network ready for prediction, with the settings its checkpoint carries."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from medseg.config.plan import Plan, Preprocessing
from medseg.config.schema import InferenceConfig
from medseg.data.profile import ProfileRange
from medseg.errors import MedsegError
from medseg.nn.checkpoint import Checkpoint, OperatingPoint, load_checkpoint
from medseg.nn.ensemble import MeanProbability
from medseg.nn.registry import build_model
from medseg.planning.resolve import assemble
from medseg.runtime.device import pick_device
from medseg.tracking.registry import fetch_model


@dataclass
class LoadedModel:
    """A network ready for prediction with its checkpoint's plan (preprocessing, window, classes)
    and operating point (threshold, minimum lesion volume)."""

    model: torch.nn.Module
    plan: Plan
    operating_point: OperatingPoint
    icfg: InferenceConfig
    connectivity: int
    device: torch.device
    training_scans: ProfileRange | None = None  # what predict compares each scan with (None: not known)

    @property
    def preprocess(self) -> Preprocessing:
        """The plan's preprocessing (spacing, normalisation, channels, classes)."""
        return self.plan.preprocess


def ensemble_members(source: Path | str | Sequence[Path | str]) -> list[Path | str]:
    """The checkpoints of ``source``: one file or URI, several, or a folder (the ``best.pt`` of
    every run folder below it, e.g. the folds of ``medseg train --folds``).

    Raises:
        MedsegError: a folder without any best.pt.
    """
    if isinstance(source, (list, tuple)):
        return [m for s in source for m in ensemble_members(s)]
    path = Path(str(source))
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("best.pt") if (p.parent / "config.yaml").is_file()
        )  # run folders, not model copies
        if not found:
            raise MedsegError(
                f"{path}: a folder without any best.pt; pass a checkpoint, several, or a folder of training runs"
            )
        return list(found)
    return [source]


def load_model(
    checkpoint: Path | str | Sequence[Path | str], device: str = "auto", tracking_uri: str | None = None
) -> LoadedModel:
    """Build the network of a checkpoint and load its weights (``weights_only=True``); several
    checkpoints (or a folder of runs) become one model averaging their probabilities.

    Args:
        checkpoint: a .pt file, an MLflow URI ``runs:/<id>/model`` / ``models:/<name>/<version>``,
            a list of them, or a folder.

    Raises:
        MedsegError: no such file or model, not a complete medseg checkpoint, or ensemble members
        that preprocess differently.
    """
    members = ensemble_members(checkpoint)
    if len(members) > 1:
        return from_checkpoints([_read(m, tracking_uri) for m in members], device)
    return from_checkpoint(_read(members[0], tracking_uri), device)


def _read(checkpoint: Path | str, tracking_uri: str | None) -> Checkpoint:
    if str(checkpoint).startswith(("runs:/", "models:/")):
        with tempfile.TemporaryDirectory(prefix="medseg-model-") as tmp:
            return load_checkpoint(fetch_model(str(checkpoint), tracking_uri, Path(tmp)), str(checkpoint))
    return load_checkpoint(checkpoint)


def from_checkpoint(ckpt: Checkpoint, device: str = "auto") -> LoadedModel:
    """The network of ``ckpt`` on ``device`` in eval mode, with its preprocessing and operating point.

    Raises:
        MedsegError: the weights do not fit the network of the config (see :func:`build_network`).
    """
    cfg = ckpt.config
    model = build_network(ckpt)
    dev = pick_device(device)
    model.to(dev).eval()
    plan = checkpoint_plan(ckpt)
    return LoadedModel(
        model, plan, ckpt.operating_point, cfg.inference, cfg.eval.connectivity, dev, ckpt.training_scans
    )


def checkpoint_plan(ckpt: Checkpoint) -> Plan:
    """The plan a checkpoint carries; one written before plans were stored gets the plan of its
    config and preprocessing (:func:`medseg.planning.resolve.assemble`, the rules training used).

    Raises:
        MedsegError: naming the checkpoint: its config's window does not fit its network.
    """
    if ckpt.plan is not None:
        return ckpt.plan
    try:
        return assemble(ckpt.config, ckpt.preprocess)
    except MedsegError as exc:
        raise MedsegError(f"{ckpt.source or 'checkpoint'}: {exc}") from None


def build_network(ckpt: Checkpoint) -> torch.nn.Module:
    """The network of the checkpoint's config (``in_channels`` inputs, one output per class) with
    its weights loaded (``strict=True``), on the CPU. The weights are compared with the network's
    tensors first on PyTorch's ``meta`` device (shapes, no memory), so a crafted config asking for a
    huge network is refused before anything is allocated.

    Raises:
        MedsegError: naming the checkpoint's file: the network cannot be built, or the weights are
        not the ones of that network (missing or unexpected tensors, another shape, NaN/inf values).
    """
    where = ckpt.source or "checkpoint"
    problem = weights_problem(_network(ckpt, where, torch.device("meta")).state_dict(), ckpt.state_dict)
    if problem is not None:
        raise MedsegError(
            f"{where}: this checkpoint's weights do not match its config: {problem}; use the best.pt written with it"
        )
    model = _network(ckpt, where, torch.device("cpu"))
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model


def _network(ckpt: Checkpoint, where: str, device: torch.device) -> torch.nn.Module:
    """The untrained network of ``ckpt``'s config, built on ``device``.

    Raises:
        MedsegError: the config's network cannot be built (named by ``where``).
    """
    pre = ckpt.preprocess
    network = ckpt.plan.network if ckpt.plan is not None else ckpt.config.model  # earlier checkpoints: no plan
    try:
        with device:
            return build_model(network, in_channels=pre.in_channels, out_channels=len(pre.classes))
    except MedsegError as exc:
        raise MedsegError(f"{where}: {exc}") from None
    except (AssertionError, RuntimeError, TypeError, ValueError) as exc:  # MONAI's networks check their arguments so
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise MedsegError(
            f"{where}: the network of its config cannot be built ({type(exc).__name__}: {first}); "
            "use the best.pt written by 'medseg train'"
        ) from None


def weights_problem(expected: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> str | None:
    """What stops ``weights`` loading into a network whose ``state_dict()`` is ``expected``: the
    first missing or unexpected tensor, or one of another shape; also NaN or infinite values.
    None when they fit. (``load_state_dict`` reports all of these as one multi-line RuntimeError;
    this names the first one, for a one-line message.)"""
    missing = [k for k in expected if k not in weights]
    if missing:
        return f"{len(missing)} tensor(s) missing, e.g. {missing[0][:80]!r}"
    unexpected = [k for k in weights if k not in expected]
    if unexpected:
        return f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0][:80]!r}"
    for name, tensor in expected.items():
        got = weights[name]
        if tuple(got.shape) != tuple(tensor.shape):
            return (
                f"{name[:80]!r} has shape {tuple(got.shape)}, the network of the config expects {tuple(tensor.shape)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            return f"{name[:80]!r} holds NaN or infinite values"
    return None


def from_checkpoints(ckpts: Sequence[Checkpoint], device: str = "auto") -> LoadedModel:
    """An ensemble (:class:`medseg.nn.ensemble.MeanProbability`) of checkpoints that share their
    preprocessing and patch size; the operating point is the first one's (``medseg tune`` on
    the folds writes the same one into each).

    Raises:
        MedsegError: members that differ in spacing, normalisation, input channels, classes or patch size.
    """
    first = from_checkpoint(ckpts[0], device)
    members = [first.model]
    scans = first.training_scans
    for ckpt in ckpts[1:]:
        lm = from_checkpoint(ckpt, device)
        differs = [
            name
            for name in ("spacing", "normalize", "in_channels", "channels", "classes", "background", "ct_stats")
            if getattr(lm.preprocess, name) != getattr(first.preprocess, name)
        ] + (["roi_size"] if lm.plan.roi_size != first.plan.roi_size else [])
        if differs:
            raise MedsegError(
                f"{ckpt.source or f'checkpoint of epoch {ckpt.epoch}'}: differs from the ensemble's first member "
                f"({ckpts[0].source or 'epoch ' + str(ckpts[0].epoch)}) in {', '.join(differs)}; "
                "ensemble only runs of the same config (e.g. the folds of one medseg train --folds)"
            )
        members.append(lm.model)
        scans = scans.union(lm.training_scans) if scans is not None else lm.training_scans
    return replace(first, model=MeanProbability(members).to(first.device).eval(), training_scans=scans)
