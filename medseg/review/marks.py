"""Reviewer marks as ``medseg evaluate --marks`` applies them (the file format and its reader are
:mod:`medseg.io.review_marks`, below every stage that reads it)."""

from __future__ import annotations

from medseg.evaluation.reviewed import ReviewDecisions, Verdict
from medseg.io.review_marks import Mark


def lesion_decisions(marks: list[Mark], source: str) -> ReviewDecisions:
    """The accept / reject marks on lesions as ``medseg evaluate --marks`` applies them (the last
    mark on a lesion wins; scan marks and comments alone are left out)."""
    verdicts: dict[str, dict[tuple[str, int], Verdict]] = {}
    for m in marks:
        if m.kind != "scan" and m.decision and m.id is not None:
            verdicts.setdefault(m.case, {})[(m.kind, m.id)] = Verdict(m.decision, m.centroid_mm)
    return ReviewDecisions(source, verdicts)
