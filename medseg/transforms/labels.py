"""Label selection: label values -> one binary channel per lesion class."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import MapTransform


class SelectLesionClassesd(MapTransform):
    """Label (1, X, Y, Z) -> (C, X, Y, Z): channel c is 1 where the value is in ``classes[c]``,
    every other value is 0 (e.g. BraTS {1, 2, 3, 4} -> whole tumour; classes may overlap: whole
    tumour / core / enhancing). MONAI's ``MapLabelValued`` keeps unlisted values, so it cannot
    drop the others."""

    def __init__(self, keys: Sequence[str], classes: Sequence[Sequence[int]]) -> None:
        super().__init__(keys)
        self.classes = [torch.as_tensor(list(values)) for values in classes]

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.keys:
            values = torch.as_tensor(d[key][0]).round().long()
            out = d[key][:1].repeat(len(self.classes), *([1] * (d[key].ndim - 1)))  # a MetaTensor keeps its meta
            for c, wanted in enumerate(self.classes):
                out[c] = torch.isin(values, wanted)
            d[key] = out
        return d
