"""Training/validation splits and the dataset's median spacing."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from medseg.config.schema import ExperimentConfig
from medseg.data.case import Case
from medseg.errors import MedsegError


def case_groups(cases: Sequence[Case], pattern: str | None) -> list[str]:
    """The group of each case: the match of ``pattern`` in its id (the first group if the
    pattern has one), e.g. ``^(P\\d+)_`` -> ``P14`` for ``P14_T2``; the id itself without a
    pattern or a match.

    Raises:
        MedsegError: a pattern that is not a valid regular expression.
    """
    if not pattern:
        return [c.case_id for c in cases]
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise MedsegError(
            f"data.group_pattern: {pattern!r} is not a regular expression ({exc}); e.g. '^(P\\d+)_'"
        ) from None
    out = []
    for c in cases:
        m = rx.search(c.case_id)
        out.append((m.group(1) if m.groups() else m.group(0)) if m else c.case_id)
    return out


def split_cases(
    cases: Sequence[Case],
    val_fraction: float,
    seed: int,
    val_ids: Sequence[str] | None = None,
    group_pattern: str | None = None,
) -> tuple[list[Case], list[Case]]:
    """The named ``val_ids`` as validation, or shuffle the groups (:func:`case_groups`) with
    ``seed`` and hold out whole groups until ``round(n * val_fraction)`` (at least 1) cases.

    Raises:
        MedsegError: fewer than 2 cases, or a named validation case that does not exist.
    """
    if len(cases) < 2:
        raise MedsegError(f"dataset has {len(cases)} case(s); training needs at least 2 (one for validation)")
    if val_ids:
        known = {c.case_id for c in cases}
        unknown = [v for v in val_ids if v not in known]
        if unknown:
            raise MedsegError(
                f"data.val_cases: {unknown[0]!r} is not a case of the dataset (cases: "
                f"{', '.join(sorted(known)[:8])}...)"
            )
        if len(set(val_ids)) >= len(cases):
            raise MedsegError("data.val_cases: names every case; leave at least one for training")
        return [c for c in cases if c.case_id not in val_ids], [c for c in cases if c.case_id in val_ids]
    want = min(len(cases) - 1, max(1, round(len(cases) * val_fraction)))
    if not group_pattern:  # one case per group: medseg 0.2's seeded split exactly
        order = np.random.default_rng(seed).permutation(len(cases))
        return [cases[i] for i in sorted(order[want:])], [cases[i] for i in sorted(order[:want])]
    groups = case_groups(cases, group_pattern)
    names = sorted(set(groups))
    if len(names) < 2:
        raise MedsegError(
            f"data.group_pattern: the {len(cases)} cases form {len(names)} group; a split needs at least 2"
        )
    held: set[str] = set()
    for i in np.random.default_rng(seed).permutation(len(names)):
        if sum(g in held for g in groups) >= want or len(held) == len(names) - 1:
            break
        held.add(names[i])
    return [c for c, g in zip(cases, groups) if g not in held], [c for c, g in zip(cases, groups) if g in held]


def run_split(cases: Sequence[Case], cfg: ExperimentConfig) -> tuple[list[Case], list[Case]]:
    """The (training, validation) cases of a run of ``cfg``: :func:`split_cases` with its
    data.val_fraction, data.val_cases, data.group_pattern and train.seed."""
    return split_cases(cases, cfg.data.val_fraction, cfg.train.seed, cfg.data.val_cases, cfg.data.group_pattern)


def fold_splits(cases: Sequence[Case], folds: int, seed: int, group_pattern: str | None = None) -> list[list[str]]:
    """Validation case ids of each of ``folds`` folds: whole groups (:func:`case_groups`) dealt,
    largest first after a seeded shuffle, to the fold with the fewest cases so far. Every case is
    validated exactly once; a group never spans two folds.

    Raises:
        MedsegError: fewer groups than folds, or fewer than 2 folds.
    """
    groups = case_groups(cases, group_pattern)
    names = sorted(set(groups))
    if folds < 2 or len(names) < folds:
        raise MedsegError(f"--folds {folds}: the cases form {len(names)} group(s); use 2 to {len(names)} folds")
    rng = np.random.default_rng(seed)
    names = [names[i] for i in rng.permutation(len(names))]
    names.sort(key=lambda g: -groups.count(g))  # stable: shuffled order among equal sizes
    members: list[list[str]] = [[] for _ in range(folds)]
    for g in names:
        k = min(range(folds), key=lambda f: (len(members[f]), f))
        members[k] += [c.case_id for c, cg in zip(cases, groups) if cg == g]
    return [sorted(m) for m in members]
