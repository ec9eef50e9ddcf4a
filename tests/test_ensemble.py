"""Fold ensembles: the mean of the members' probabilities, one model for predict."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import MedsegError
from medseg.inference.model import ensemble_members
from medseg.nn.ensemble import MeanProbability


class Const(torch.nn.Module):
    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x):
        return torch.full_like(x[:, :1], self.logit)


def test_mean_of_probabilities_not_of_logits():
    x = torch.zeros(1, 1, 4, 4, 4)
    ens = MeanProbability([Const(4.0), Const(-4.0), Const(0.0)])
    p = torch.sigmoid(ens(x))
    expected = (torch.sigmoid(torch.tensor(4.0)) + torch.sigmoid(torch.tensor(-4.0)) + 0.5) / 3
    assert torch.allclose(p, expected.expand_as(p), atol=1e-6)
    assert torch.allclose(
        torch.sigmoid(MeanProbability([Const(2.0)])(x)), torch.sigmoid(torch.tensor(2.0)).expand(1, 1, 4, 4, 4)
    )


def test_members_from_files_lists_and_folders(tmp_path):
    for k in range(3):
        (tmp_path / "cv" / f"fold{k}" / "run").mkdir(parents=True)
        (tmp_path / "cv" / f"fold{k}" / "run" / "best.pt").write_bytes(b"")
        (tmp_path / "cv" / f"fold{k}" / "run" / "config.yaml").write_text("")
        (tmp_path / "cv" / f"fold{k}" / "run" / "mlflow_model" / "artifacts").mkdir(parents=True)
        (tmp_path / "cv" / f"fold{k}" / "run" / "mlflow_model" / "artifacts" / "best.pt").write_bytes(
            b""
        )  # a copy, not a member
    assert len(ensemble_members(tmp_path / "cv")) == 3
    assert ensemble_members("runs:/abc/model") == ["runs:/abc/model"]
    assert len(ensemble_members([tmp_path / "cv" / "fold0" / "run" / "best.pt", "runs:/abc/model"])) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsegError, match="without any best.pt"):
        ensemble_members(tmp_path / "empty")
