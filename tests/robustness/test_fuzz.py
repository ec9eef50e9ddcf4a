"""Fuzzing NIfTI headers: random dims, pixdim, data type, qform/sform codes, quaternions, sform rows
and scaling over small volumes. ``read_geometry``, ``check_readable`` and ``predict_volume`` must
each either succeed or raise ``MedsegError``, nothing else (a traceback for the user)."""

from __future__ import annotations

import math
import resource
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.robustness import badfiles

DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "float32", "float64", "complex64"]
SPECIAL = [0.0, -1.0, -0.5, math.nan, math.inf, -math.inf, 1e-7]
CODES = [0, 1, 2, 3, 4, 7]


def spacing():
    normal = st.floats(0.3, 5.0)
    return st.one_of(normal, normal, normal, st.sampled_from(SPECIAL))  # a quarter of them special


def entry():
    return st.one_of(st.floats(-5.0, 5.0), st.sampled_from([0.0, math.nan, math.inf]))


@st.composite
def plausible_srow(draw):
    """A scanner-like sform: rotated, flipped, anisotropic (sometimes a spacing of 0 or 1e-7)."""
    from tests.conftest import oblique_affine

    affine = oblique_affine(tuple(draw(spacing()) for _ in range(3)), draw(st.floats(-45, 45)))
    if draw(st.booleans()):
        affine[:, [0, 1]] = affine[:, [1, 0]]  # axes permuted
    return affine[:3].tolist()


@st.composite
def headers(draw):
    ndim = draw(st.sampled_from([1, 2, 3, 3, 3, 3, 4, 5]))
    shape = tuple(draw(st.lists(st.integers(1, 10), min_size=ndim, max_size=ndim)))
    return {
        "shape": shape,
        "dtype": draw(st.sampled_from(DTYPES)),
        "pixdim": [draw(st.sampled_from([1.0, -1.0, 0.0]))]
        + [draw(spacing()) for _ in range(3)]
        + [1.0, 1.0, 1.0, 1.0],
        "qform_code": draw(st.sampled_from(CODES)),
        "sform_code": draw(st.sampled_from(CODES)),
        "quatern": [draw(st.floats(-1.2, 1.2)) for _ in range(3)],
        "srow": draw(
            st.one_of(plausible_srow(), st.lists(st.lists(entry(), min_size=4, max_size=4), min_size=3, max_size=3))
        ),
        "scl": draw(st.sampled_from([(1.0, 0.0), (0.0, 0.0), (math.nan, 0.0), (2.0, -5.0), (math.inf, 0.0)])),
        "gz": draw(st.booleans()),
        "constant": draw(st.booleans()),
    }


def write(h: dict, folder: Path, n: int) -> Path:
    rng = np.random.default_rng(n)
    arr = np.zeros(h["shape"], dtype=h["dtype"]) if h["constant"] else (rng.random(h["shape"]) * 100).astype(h["dtype"])
    fields = {
        "pixdim": h["pixdim"],
        "qform_code": h["qform_code"],
        "sform_code": h["sform_code"],
        "quatern_b": h["quatern"][0],
        "quatern_c": h["quatern"][1],
        "quatern_d": h["quatern"][2],
        "srow_x": h["srow"][0],
        "srow_y": h["srow"][1],
        "srow_z": h["srow"][2],
        "scl_slope": h["scl"][0],
        "scl_inter": h["scl"][1],
    }
    raw = badfiles._raw_nifti(arr, **fields)
    return badfiles._write(folder / f"fuzz{n}.nii{'.gz' if h['gz'] else ''}", raw)


@pytest.fixture(scope="module")
def loaded_model(tiny_checkpoint):
    from medseg.inference.model import load_model

    return load_model(tiny_checkpoint, "cpu")


@pytest.fixture
def memory_cap():
    """Cap this process's data segment at 8 GiB while fuzzing: a header that makes medseg allocate
    too much shows up as an exception instead of exhausting the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (8 * 2**30, hard))
    yield
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def test_fuzz_nifti_headers(loaded_model, tmp_path, memory_cap):
    from medseg.errors import MedsegError
    from medseg.inference.predictor import predict_volume
    from medseg.io.geometry import read_geometry
    from medseg.io.volumes import check_readable

    counter = iter(range(10**6))

    @settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(headers())
    def check(h):
        path = write(h, tmp_path, next(counter))
        for fn in (read_geometry, check_readable, lambda p: predict_volume(loaded_model, p)):
            try:
                fn(path)
            except MedsegError as err:
                assert str(err).strip() and "\n" not in str(err).strip(), repr(str(err))
            except Exception as err:  # anything else reaches the user as a traceback
                raise AssertionError(
                    f"{getattr(fn, '__name__', 'predict_volume')} raised {type(err).__name__}: "
                    f"{str(err)[:300]} for header {h}"
                ) from err

    check()
