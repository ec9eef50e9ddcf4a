"""A fine-tuned model's preprocessing against its source model's (``train.init_from``).

With ``train.init_keep_preprocessing`` the source's preprocessing replaces the config's
``preprocess`` keys before anything is planned (:func:`keep_preprocessing`, called by
:func:`medseg.planning.resolve.resolve` only, so the run's plan, ``config.yaml`` and checkpoint
hold the kept values). Otherwise :func:`preprocessing_differences` names what differs, for one
warning line. Per-channel statistics (``ct_stats``, nyul ``landmarks``) follow the channel
matching of the weights (:func:`medseg.nn.transfer.match_channels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.config.plan import Preprocessing
from medseg.config.schema import ExperimentConfig
from medseg.nn.transfer import ChannelMatch, match_channels

# preprocess keys a kept preprocessing sets, with the Preprocessing field each comes from
KEPT_KEYS = {
    "target_spacing": "spacing",
    "normalize": "normalize",
    "background": "background",
    "ct_stats": "ct_stats",
    "landmarks": "landmarks",
}
PER_CHANNEL = ("ct_stats", "landmarks")


def _per_channel(values: tuple | None, match: ChannelMatch) -> tuple | None:
    """Per-channel statistics in the new channel order; None when some channel is new (then the
    new dataset plans all of them)."""
    if values is None or any(i is None for i in match.sources):
        return None
    return tuple(values[i] for i in match.sources)


def keep_preprocessing(
    cfg: ExperimentConfig, source: Preprocessing, channels: Sequence[str]
) -> tuple[ExperimentConfig, list[str]]:
    """``cfg`` with the source model's spacing, normalisation and background, and its CT statistics
    or nyul landmarks when every input channel in ``channels`` has a source channel; returns the
    ``preprocess.<key>`` names set."""
    match = match_channels(source.channels, source.in_channels, channels)
    values = {key: getattr(source, field) for key, field in KEPT_KEYS.items()}
    for key in PER_CHANNEL:
        values[key] = _per_channel(values[key], match)
    pre = type(cfg.preprocess).model_validate({**cfg.preprocess.model_dump(), **values})
    return cfg.model_copy(update={"preprocess": pre}), [f"preprocess.{k}" for k, v in values.items() if v is not None]


def preprocessing_differences(source: Preprocessing, target: Preprocessing) -> list[str]:
    """What the target preprocesses otherwise than the source, one phrase each (e.g.
    ``spacing [1.0, 1.0, 1.0] mm (source [2.0, 2.0, 2.0])``); statistics compared channel by
    matched channel, within 0.1 %."""
    diffs = []
    if not np.allclose(source.spacing, target.spacing, rtol=1e-4):
        diffs.append(f"spacing {list(target.spacing)} mm (source {list(source.spacing)})")
    for key in ("normalize", "background"):
        if getattr(source, key) != getattr(target, key):
            diffs.append(f"{key} {getattr(target, key)} (source {getattr(source, key)})")
    if source.normalize == target.normalize:
        match = match_channels(source.channels, source.in_channels, target.channels)
        names = target.channels or tuple(f"channel{i}" for i in range(target.in_channels))
        for key in PER_CHANNEL:
            src, tgt = getattr(source, key), getattr(target, key)
            if not src or not tgt:
                continue
            differ = [
                names[j]
                for j, i in enumerate(match.sources)
                if i is not None and not np.allclose(src[i], tgt[j], rtol=1e-3)
            ]
            if differ:
                diffs.append(f"{key} of {', '.join(differ)}")
    return diffs
