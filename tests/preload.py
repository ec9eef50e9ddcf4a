"""What the test fork server (:func:`tests.conftest.cli`) does once, so that no forked ``medseg``
repeats it: import torch, MONAI, MLflow and medseg's stages, and fill the caches that every
training would otherwise fill again on its own (a tiny training through ``cli()``: 7.8 s -> 5.5 s
on 2 cores):

- ``torch._dynamo``, imported by the first ``torch.optim`` optimiser a process builds (~3 s);
- MLflow's map of installed packages (``importlib_metadata.packages_distributions``, ~3 s), read
  when the logged model's requirements are checked against this environment. The fork server
  lives for one test session, in which nothing installs or removes packages;
- matplotlib's font cache and Agg canvas, loaded by a process's first PNG (the review site's
  plots; ~0.3 s);
- a fresh MLflow SQLite store: MLflow builds one by replaying its schema migrations (alembic,
  ~2 s each time). The server builds one template that way; a forked process whose store file is
  new gets a copy of it (SQLite's backup API) instead: the same tables and schema version, before
  MLflow adds the store's own rows (its Default experiment, with this store's artifact folder).
  ``fresh_store_template = False`` in a child restores the real replay (the test of two processes
  creating one store at once).

The private MLflow names are imported by name: if MLflow renames one, the import fails and
multiprocessing's fork server skips this preload (the tests run slower, not wrong).

The fork server never runs torch, so no OpenMP threads exist when it forks.
"""

import atexit
import io
import os
import shutil
import sqlite3
import tempfile
from contextlib import closing

import mlflow.store.db.utils
import sqlalchemy
import torch._dynamo  # noqa: F401
from matplotlib.figure import Figure
from mlflow.store.db.utils import _initialize_tables as _replay_migrations
from mlflow.utils.requirements_utils import _init_packages_to_modules_map

import medseg.cli.app  # noqa: F401
import medseg.evaluation.evaluate  # noqa: F401
import medseg.inference.batch  # noqa: F401
import medseg.training.run  # noqa: F401

_init_packages_to_modules_map()

_warm = Figure()
_warm.add_subplot().plot([0, 1], label="warm-up")
_warm.savefig(io.BytesIO(), format="png")


def _migrated_template() -> str:
    """A new SQLite file with MLflow's tables, built by MLflow's own migrations once; removed when
    the fork server exits (not when a forked child does)."""
    folder = tempfile.mkdtemp(prefix="medseg-test-store-")
    atexit.register(lambda pid=os.getpid(): os.getpid() == pid and shutil.rmtree(folder, ignore_errors=True))
    path = os.path.join(folder, "template.db")
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    _replay_migrations(engine)
    engine.dispose()
    return path


fresh_store_template = True
TEMPLATE = _migrated_template()


def _initialize_from_template(engine: sqlalchemy.engine.Engine) -> None:
    """MLflow's ``_initialize_tables``: a copy of :data:`TEMPLATE` into a new SQLite file store,
    the real migrations for any other database or when :data:`fresh_store_template` is off."""
    db = engine.url.database
    if not fresh_store_template or engine.url.get_backend_name() != "sqlite" or not db or db == ":memory:":
        _replay_migrations(engine)
        return
    with closing(sqlite3.connect(TEMPLATE)) as source, closing(sqlite3.connect(db)) as target:
        source.backup(target)


mlflow.store.db.utils._initialize_tables = _initialize_from_template
