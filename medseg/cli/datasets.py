"""The dataset argument of the commands that read cases (check, plan, predict, evaluate, tune):
a dataset folder, case list or experiment config, with the layout flags and ``--set``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medseg.errors import MedsegError

if TYPE_CHECKING:  # the commands import these lazily, to keep `medseg --help` fast
    from medseg.config.schema import ExperimentConfig
    from medseg.data.case import Case
    from medseg.data.sources.common import Dataset


def dataset_argument(
    dataset: str,
    layout: str,
    channels: list[str] | None,
    label: str | None,
    overrides: list[str] | None = None,
    split: str | None = "training",
) -> tuple[Dataset, ExperimentConfig | None]:
    """A command's dataset argument (:func:`medseg.data.sources.discover.from_argument`), ``--set``
    applied when it is an experiment config.

    Args:
        dataset: dataset folder, case list or experiment config.
        layout, channels, label: ``--layout``, ``--channel``, ``--label`` (a config's data: section wins).
        overrides: ``--set KEY=VALUE`` assignments; only with a config.
        split: ``training``, ``test``, ``test_labeled`` or None (the source's held-out cases).

    Raises:
        MedsegError: ``--set`` with an argument that is not a YAML config, or any error of the source.
    """
    from medseg.data.sources.discover import from_argument

    return from_argument(dataset, layout, channels or None, label, split, overrides or ())


def dataset_cases(
    dataset: str | None,
    layout: str,
    channel: list[str] | None,
    label: str | None,
    set_: list[str] | None,
    split: str | None,
) -> list[Case]:
    """``--dataset``'s cases (predict, tune) ([] without it), read with the layout flags and ``--set``.

    Raises:
        MedsegError: layout flags, --set or --split without --dataset, or a problem of the dataset.
    """
    if dataset is None:
        given = [
            o
            for o, v in (
                ("--layout", layout != "auto"),
                ("--channel", channel),
                ("--label", label),
                ("--set", set_),
                ("--split", split),
            )
            if v
        ]
        if given:
            raise MedsegError(
                f"{'/'.join(given)}: describe the cases of --dataset; give --dataset DATASET or drop them"
            )
        return []
    return dataset_argument(dataset, layout, channel, label, set_, split)[0].require_clean()
