"""Fine-tuning's start: a trained model's weights carried into a new network (``train.init_from``).

Rules, tensor by tensor of the new network (parameters and buffers, each shared tensor once):

* same name and shape in the source: **loaded** (copied);
* an input-layer kernel (:data:`medseg.nn.parts.INPUT_LAYER`) when the input channels differ
  (count, order or names): **adapted**: each new channel takes the source kernel of its source
  channel (:func:`match_channels`); a channel the source lacks starts at zero or at the mean of
  the source's kernels over its channels (``train.init_new_channels``);
* otherwise **skipped** (another shape; or NaN/inf values in the source) or **new** (no tensor
  of that name in the source): it keeps its fresh initialisation.

Source tensors the new network lacks are **unused**. A :class:`TransferReport` lists them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from medseg.nn.parts import input_layer_names, named_tensors

STATUSES = ("loaded", "adapted", "skipped", "new", "unused")


@dataclass(frozen=True)
class ChannelMatch:
    """Which source channel each input channel of the new network takes (None: a new channel),
    and whether they were matched by name (else by position)."""

    sources: tuple[int | None, ...]
    n_source: int
    by_name: bool
    source_names: tuple[str, ...] = ()  # names as the checkpoints give them (empty: unnamed)
    target_names: tuple[str, ...] = ()

    @property
    def identity(self) -> bool:
        """The new network reads exactly the source's channels, in the source's order."""
        return self.sources == tuple(range(self.n_source))

    def describe(self, new_channels: str) -> str:
        """One line, e.g. ``by name: flair <- flair, t1 new (zero), t2 new (zero)``."""
        src = _names(self.source_names, self.n_source)
        tgt = _names(self.target_names, len(self.sources))
        parts = [
            f"{t} <- {src[i]}" if i is not None else f"{t} new ({new_channels})" for t, i in zip(tgt, self.sources)
        ]
        dropped = [src[i] for i in range(self.n_source) if i not in self.sources]
        tail = f"; source channel(s) not used: {', '.join(dropped)}" if dropped else ""
        return f"{'by name' if self.by_name else 'by position'}: {', '.join(parts)}{tail}"


def _names(names: Sequence[str], n: int) -> list[str]:
    return list(names) if len(names) == n else [f"channel{i}" for i in range(n)]


def match_channels(source_names: Sequence[str], n_source: int, target_names: Sequence[str]) -> ChannelMatch:
    """The source channel of each target channel: by name (case-insensitive) when both sides name
    their channels and share at least one name; else by position (target channel i takes source
    channel i, the ones beyond the source's count are new)."""
    src = [n.lower() for n in source_names] if len(source_names) == n_source else []
    tgt = [n.lower() for n in target_names]
    names = tuple(source_names), tuple(target_names)
    if src and any(t in src for t in tgt):
        return ChannelMatch(tuple(src.index(t) if t in src else None for t in tgt), n_source, True, *names)
    return ChannelMatch(tuple(i if i < n_source else None for i in range(len(tgt))), n_source, False, *names)


@dataclass(frozen=True)
class TensorNote:
    """What happened to one tensor: ``status`` (one of :data:`STATUSES`) and why."""

    name: str
    status: str
    detail: str = ""


@dataclass(frozen=True)
class TransferReport:
    """Every tensor's fate and how the input channels were matched."""

    notes: tuple[TensorNote, ...]
    channels: str

    def count(self, status: str) -> int:
        return sum(n.status == status for n in self.notes)

    def summary(self) -> str:
        """``12 loaded, 2 adapted, 1 skipped, 0 new, 0 unused``."""
        return ", ".join(f"{self.count(s)} {s}" for s in STATUSES)

    def text(self) -> str:
        """The full report: the summary, the channel matching, then one line per tensor by status."""
        lines = [f"tensors: {self.summary()}", f"input channels: {self.channels}", ""]
        for status in STATUSES:
            lines += [
                f"{status:8s} {n.name}" + (f"  {n.detail}" if n.detail else "")
                for n in self.notes
                if n.status == status
            ]
        return "\n".join(lines) + "\n"


def adapt_input_kernel(
    source: torch.Tensor, shape: Sequence[int], match: ChannelMatch, new_channels: str
) -> torch.Tensor:
    """An input-layer kernel of ``shape`` (out, in, ...) from the source's (out, n_source, ...):
    channel j is the source's channel ``match.sources[j]``; a new channel is zero, or with
    ``new_channels`` ``mean`` the mean of the source kernel over its channels."""
    out = torch.zeros(tuple(shape), dtype=source.dtype)
    for j, i in enumerate(match.sources):
        if i is not None:
            out[:, j] = source[:, i]
        elif new_channels == "mean":
            out[:, j] = source.mean(dim=1)
    return out


def _note(name: str, target: torch.Tensor, source: torch.Tensor | None, adapt: bool) -> TensorNote:
    """The fate of one target tensor (before any copy); ``adapt``: an input kernel to adapt."""
    if source is None:
        return TensorNote(name, "new", "missing in source: keeps its fresh initialisation")
    if source.is_floating_point() and not bool(torch.isfinite(source).all()):
        return TensorNote(name, "skipped", "NaN or infinite values in the source")
    src, tgt = tuple(source.shape), tuple(target.shape)
    if adapt and src[:1] + src[2:] == tgt[:1] + tgt[2:]:
        return TensorNote(name, "adapted", f"input channels: source {src}, here {tgt}")
    if src == tgt and not adapt:
        return TensorNote(name, "loaded")
    return TensorNote(name, "skipped", f"shape mismatch: source {src}, here {tgt}")


def transfer_weights(
    net: nn.Module,
    source: dict[str, torch.Tensor],
    family: str,
    match: ChannelMatch,
    new_channels: str = "zero",
) -> TransferReport:
    """Copy ``source`` (a checkpoint's ``state_dict``) into ``net`` (of network ``family``) by
    the module docstring's rules, in place, and report every tensor.

    Args:
        net: the new network (any device); input layer (out, len(match.sources), ...).
        source: the source's tensors by name; input layer (out, match.n_source, ...).
        match: the source channel of each input channel (:func:`match_channels`).
        new_channels: ``zero`` or ``mean`` for channels the source lacks.
    """
    targets = named_tensors(net)
    aliases = set(net.state_dict()) - set(targets)  # second names of shared tensors
    inputs = input_layer_names(net, family, len(match.sources)) if not match.identity else set()
    notes = []
    with torch.no_grad():
        for name, target in targets.items():
            src = source.get(name)
            note = _note(name, target, src, name in inputs and src is not None and src.shape[1] == match.n_source)
            if note.status == "loaded":
                target.copy_(src)
            elif note.status == "adapted":
                target.copy_(adapt_input_kernel(src, target.shape, match, new_channels))
            notes.append(note)
    notes += [
        TensorNote(n, "unused", "not in the new network") for n in source if n not in targets and n not in aliases
    ]
    return TransferReport(tuple(notes), match.describe(new_channels))
