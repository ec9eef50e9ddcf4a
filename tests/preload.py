"""What the test fork server (:func:`tests.conftest.cli`) does once, so that no forked ``medseg``
repeats it: import torch, MONAI, MLflow and medseg's stages, and fill the caches that every
training would otherwise fill again on its own (a tiny training through ``cli()``: 7.8 s -> 5.5 s
on 2 cores):

- ``torch._dynamo``, imported by the first ``torch.optim`` optimiser a process builds (~3 s);
- MLflow's map of installed packages (``importlib_metadata.packages_distributions``, ~3 s), read
  when the logged model's requirements are checked against this environment. The fork server
  lives for one test session, in which nothing installs or removes packages;
- matplotlib's font cache and Agg canvas, loaded by a process's first PNG (the review site's
  plots; ~0.3 s).

The fork server never runs torch, so no OpenMP threads exist when it forks.
"""

import io

import mlflow  # noqa: F401
import torch._dynamo  # noqa: F401
from matplotlib.figure import Figure
from mlflow.utils.requirements_utils import _init_packages_to_modules_map

import medseg.cli.app  # noqa: F401
import medseg.evaluation.evaluate  # noqa: F401
import medseg.inference.batch  # noqa: F401
import medseg.training.run  # noqa: F401

_init_packages_to_modules_map()

_warm = Figure()
_warm.add_subplot().plot([0, 1], label="warm-up")
_warm.savefig(io.BytesIO(), format="png")
