"""Adversarial inputs that cost memory or output, not correctness: every read looks at the header
first and reads no more than it promises, a scan too large to process is refused before any voxel
is read (one cap, ``MEDSEG_MAX_SCAN_GB``), and echoes of user input stay short.

* a ``.nii.gz`` whose gzip stream goes on for a GiB after the voxels: read (and ``check``-ed) with
  a few MB, measured as the peak RSS of a child process;
* a gzipped NRRD claiming 1200x1200x1000 voxels over a tiny body: ``medseg predict`` refuses it in
  one line and segments the good scan of the batch, under RLIMIT_DATA 3 GiB;
* NIfTI headers with negative or empty axes, sizes that overflow, unknown data types, broken
  voxel offsets and extension records: one clean error from every reader;
* a YAML "billion laughs" config: one short error line, exit 2.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from medseg.config.load import load_config
from medseg.data.check import check_dataset
from medseg.data.sources.discover import discover
from medseg.errors import MedsegError, clip, shorten
from medseg.io.geometry import MAX_SCAN_GB_ENV, check_scan_size, read_geometry
from medseg.io.readers import SimpleITKReader
from medseg.io.volumes import read_array, read_verified
from tests.conftest import oblique_affine, save_nifti
from tests.robustness import badfiles
from tests.robustness.conftest import (
    ROOT,
    SHAPE,
    SPACING,
    assert_clean_error,
    assert_mask_loads,
    cli_env,
    describe,
    error_lines,
    good_cases,
    good_image,
    limit_memory,
    mask_path,
    run_cli,
    run_many,
    write_dataset,
)

CHUNK = 64 * 2**20  # bytes of zeros per deflate block run
TRAILING_CHUNKS = 16  # 1 GiB inflated after the voxels
HUGE = (1200, 1200, 1000)
HUGE_LINE = (
    "{path}: needs about 46.1 GB to process (1200×1200×1000 voxels), over the 16.0 GB limit; "
    "crop or resample the scan, or raise MEDSEG_MAX_SCAN_GB"
)


@pytest.fixture(autouse=True)
def default_cap(monkeypatch):
    """Every test starts from the default cap, whatever the caller's environment says."""
    monkeypatch.delenv(MAX_SCAN_GB_ENV, raising=False)


# ------------------------------------------------------------------------------------------ makers


def gzip_with_trailing_zeros(path: Path, payload: bytes, chunks: int = TRAILING_CHUNKS) -> Path:
    """One valid gzip member: ``payload`` then ``chunks`` x 64 MiB of zeros. After a full flush a
    deflate block run does not refer back, so the zeros are compressed once and repeated: the file
    is ~1 MB, inflating to ~1 GiB, written in a second with little memory."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(payload) + comp.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(CHUNK)
    run = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(payload)
    for _ in range(chunks):
        crc = zlib.crc32(zeros, crc)
    trailer = struct.pack("<II", crc, (len(payload) + chunks * CHUNK) & 0xFFFFFFFF)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head)
        for _ in range(chunks):
            fh.write(run)
        fh.write(comp.flush(zlib.Z_FINISH) + trailer)
    return path


def huge_nrrd(path: Path, shape=HUGE) -> Path:
    """A gzip-encoded NRRD whose header claims ``shape`` float voxels over 1 MB of compressed zeros."""
    header = (
        f"NRRD0004\ntype: float\ndimension: 3\nsizes: {' '.join(map(str, shape))}\n"
        "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n"
        "encoding: gzip\nendian: little\n\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + zlib.compress(bytes(2**20), 9))
    return path


@pytest.fixture(scope="module")
def nrrd_bomb(tmp_path_factory) -> Path:
    return huge_nrrd(tmp_path_factory.mktemp("nrrd") / "huge.nrrd")


# ------------------------------------------------------------------ 1. a gzip stream longer than its image


CHILD_READ = """
import json, resource, sys
from pathlib import Path
from medseg.data.check import check_dataset
from medseg.data.sources.discover import discover
from medseg.io.volumes import read_verified
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
voxels, _ = read_verified(Path(sys.argv[1]))
problems = check_dataset(discover(Path(sys.argv[2])))
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grew_mib": grew / 1024, "shape": list(voxels.shape), "sum": float(voxels.sum(dtype="float64")),
                  "problems": problems}))
"""


def test_trailing_gzip_data_is_never_inflated(tmp_path):
    images, labels = good_cases(4)
    root = write_dataset(tmp_path / "ds", images, labels)
    plain = save_nifti(images[1], oblique_affine(SPACING), tmp_path / "c1.nii")
    bomb = gzip_with_trailing_zeros(root / "imagesTr" / "c1.nii.gz", plain.read_bytes())
    assert bomb.stat().st_size < 2 * 2**20
    res = subprocess.run(
        [sys.executable, "-c", CHILD_READ, str(bomb), str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=cli_env(),
    )
    assert res.returncode == 0, describe(res)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["shape"] == list(SHAPE) and out["sum"] == pytest.approx(float(images[1].sum(dtype=np.float64)))
    assert out["problems"] == []  # `medseg check` of the dataset holding it: clean
    assert out["grew_mib"] < 200, out  # the stream inflates to 1 GiB; reading it whole grew the process by that


def short_stream(path: Path) -> Path:
    """A complete, valid gzip stream that ends halfway through the voxels its header announces."""
    raw = badfiles._raw_nifti(good_image(4))
    path.write_bytes(gzip.compress(raw[: 352 + (len(raw) - 352) // 2]))
    return path


@pytest.mark.parametrize("make", [badfiles.truncated_gz, badfiles.truncated_nii, short_stream])
def test_truncated_bodies_are_still_refused(tmp_path, make):
    path = make(tmp_path / ("t.nii" if make is badfiles.truncated_nii else "t.nii.gz"))
    with pytest.raises(MedsegError) as err:
        read_verified(path)
    assert str(err.value).startswith(f"{path}: the file is truncated or corrupt (")
    assert str(err.value).endswith("); re-export it or remove the case")


# --------------------------------------------------------------- 2. a scan too large to process, from its header


def test_huge_scan_is_refused_before_any_voxel_is_read(nrrd_bomb, tmp_path):
    line = HUGE_LINE.format(path=nrrd_bomb)
    for read in (read_geometry, read_verified, read_array, lambda p: SimpleITKReader().read(str(p))):
        with pytest.raises(MedsegError) as err:
            read(nrrd_bomb)
        assert str(err.value) == line
    images, labels = good_cases(2)
    root = write_dataset(tmp_path / "ds", images, labels)
    inside = shutil.copy(nrrd_bomb, root / "imagesTr" / "c0.nrrd")
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][0]["image"] = "./imagesTr/c0.nrrd"
    (root / "dataset.json").write_text(json.dumps(meta))
    assert check_dataset(discover(root)) == [HUGE_LINE.format(path=inside)]


def test_predict_refuses_the_huge_scan_and_segments_the_rest(nrrd_bomb, tiny_checkpoint, good_scans, tmp_path):
    out = tmp_path / "pred"
    res = run_cli(
        "predict",
        tiny_checkpoint,
        good_scans[0],
        nrrd_bomb,
        "--out",
        out,
        "--device",
        "cpu",
        "--quiet",
        preexec_fn=limit_memory(3),
    )
    assert res.returncode == 1, describe(res)
    assert "MemoryError" not in res.stderr, describe(res)
    assert assert_clean_error(res, nrrd_bomb.name, "GB") == "error: " + HUGE_LINE.format(path=nrrd_bomb)
    assert len(error_lines(res.stderr)) == 1, describe(res)
    assert_mask_loads(mask_path(out, good_scans[0]), SHAPE)
    assert not list(out.glob("huge*")), "outputs written for the refused scan"


def test_the_cap_follows_the_environment(monkeypatch, nrrd_bomb, tiny_checkpoint, good_scans, tmp_path):
    from medseg.inference.batch import predict_files

    monkeypatch.setenv(MAX_SCAN_GB_ENV, "50")  # raised: 46.1 GB now fits, the header reads
    assert read_geometry(nrrd_bomb)[0] == HUGE
    monkeypatch.setenv(MAX_SCAN_GB_ENV, "0.0001")  # lowered: the 24x24x16 scan (0.000295 GB) is over it
    line = (
        f"{good_scans[0]}: needs about 0.000295 GB to process (24×24×16 voxels), over the 0.0001 GB limit; "
        "crop or resample the scan, or raise MEDSEG_MAX_SCAN_GB"
    )
    rows, errors = predict_files(tiny_checkpoint, [str(good_scans[0])], tmp_path / "out", "cpu", progress=False)
    assert (rows, errors) == ([], [line])
    for bad in ("lots", "-1", "0", "nan", "inf"):
        monkeypatch.setenv(MAX_SCAN_GB_ENV, bad)
        with pytest.raises(MedsegError) as err:
            read_geometry(good_scans[0])
        assert str(err.value) == (
            f"MEDSEG_MAX_SCAN_GB={bad}: not a positive number of GB; "
            "set it to e.g. MEDSEG_MAX_SCAN_GB=32, or unset it for the default 16"
        )


def test_size_rule_counts_channels_and_never_overflows():
    check_scan_size("a.nii", (240, 240, 155, 4))  # BraTS: 1.1 GB
    check_scan_size("b.nii", (512, 512, 1000))  # CT: 8.4 GB
    with pytest.raises(MedsegError, match=r"^c\.mha: needs about 30\.2 GB to process \(512×512×1200×3 voxels\)"):
        check_scan_size("c.mha", (512, 512, 1200), components=3)
    with pytest.raises(
        MedsegError, match=r"needs about 1\.3e\+24 GB to process \(32767×32767×32767×32767×32767×32767×32767"
    ):
        check_scan_size("d.nii", (32767,) * 7)


# ----------------------------------------------------------------------------- 4. headers no scan has


def _with_extension(esize: int, vox_offset: float) -> bytes:
    raw = bytearray(badfiles._raw_nifti(good_image(3), vox_offset=vox_offset))
    raw[348:352] = b"\x01\x00\x00\x00"  # extensions follow
    raw[352:360] = struct.pack("<ii", esize, 6)
    return bytes(raw)


HEADERS = {  # case -> (raw .nii bytes, what the one error line must say)
    "negative_dim": (
        lambda: badfiles._raw_nifti(good_image(3), dim=[3, 24, 24, -16, 1, 1, 1, 1]),
        "the header gives an empty axis (shape (24, 24, -16)); re-export the file",
    ),
    "zero_dim": (
        lambda: badfiles._raw_nifti(good_image(3), dim=[3, 24, 0, 16, 1, 1, 1, 1]),
        "the header gives an empty axis (shape (24, 0, 16)); re-export the file",
    ),
    "no_dims": (
        lambda: badfiles._raw_nifti(good_image(3), dim=[0, 24, 24, 16, 1, 1, 1, 1]),
        "is not a NIfTI file (its header has sizeof_hdr 348, 0 dimensions); re-export the scan as NIfTI",
    ),
    "overflowing_size": (
        lambda: badfiles._raw_nifti(good_image(3), dim=[7] + [32767] * 7, datatype=1792, bitpix=128),
        "needs about 1.3e+24 GB to process (32767×32767×32767×32767×32767×32767×32767 voxels)",
    ),
    "unknown_dtype": (
        lambda: badfiles._raw_nifti(good_image(3), datatype=12345),
        "the header gives data type code 12345, which is not a NIfTI data type (datatype)",
    ),
    "nan_vox_offset": (
        lambda: badfiles._raw_nifti(good_image(3), vox_offset=np.nan),
        "the header gives a voxel offset of nan (vox_offset); the header is corrupt, re-export the file",
    ),
    "huge_extension_area": (
        lambda: _with_extension(2**31 - 8, 2**31),
        "the header reserves 2147483296 bytes for extensions (vox_offset 2147483648), more than any scan",
    ),
    "extension_past_voxels": (
        lambda: _with_extension(2**30, 368),
        "a header extension of 1073741824 bytes at byte 352 does not fit before the voxels (vox_offset 368)",
    ),
    "extension_size_zero": (lambda: _with_extension(0, 368), "a header extension of 0 bytes at byte 352 does not fit"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["nii", "nii.gz"])
@pytest.mark.parametrize("case", HEADERS)
def test_header_no_scan_has_is_refused_by_every_reader(tmp_path, case, gz):
    make, words = HEADERS[case]
    path = badfiles._write(tmp_path / f"{case}.nii{'.gz' if gz else ''}", make())
    for read in (read_geometry, read_verified, read_array):
        with pytest.raises(MedsegError) as err:
            read(path)
        text = str(err.value)
        assert text.startswith(f"{path}: ") and words in text and "\n" not in text, (read.__name__, text)


# ------------------------------------------------------------------------------ 3. echoes of user input


def alias_bomb(levels: int = 9) -> str:
    """A "billion laughs": level k is nine references to level k-1 (9^9 leaves from ~300 bytes)."""
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    names = "abcdefghijklmnop"
    for prev, name in zip(names, names[1:levels]):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def nested_bomb(levels: int = 9) -> str:
    """The same bomb defined inside ``data.dataset``: the config's only problem."""
    names = "abcdefghijklmnop"
    parts = ["&a [x,x,x,x,x,x,x,x,x]"] + [f"&{n} [{','.join([f'*{p}'] * 9)}]" for p, n in zip(names, names[1:levels])]
    return f"data:\n  dataset: [{', '.join(parts)}]\n"


def test_clip_bounds_any_echo():
    assert clip("abc") == "'abc'" and clip([1, 2]) == "[1, 2]" and clip(None) == "None"
    assert clip("x" * 300) == "'" + "x" * 199 + "… (300 characters)"
    assert clip(b"\x00" * 300, 20) == "b'\\x00\\x00\\x00\\x00\\x… (300 characters)"
    assert clip(10**5000) == "<int>"
    assert shorten("a" * 10, 4) == "aaaa… (10 characters)" and shorten("abc") == "abc"
    bomb = yaml.safe_load(alias_bomb())
    text = clip(bomb["i"])
    assert text.startswith("[[[[...], [...], [...], [...], [...], [...], ...], ") and text.endswith("… (9 items)")
    assert len(text) == 200 + len("… (9 items)")


def test_alias_bomb_config_gives_short_lines(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    with pytest.raises(MedsegError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: data: Field required; add it"
    assert [line.split("unknown key ")[1][:3] for line in lines[1:]] == [f"'{c}'" for c in "abcdefghi"]
    assert max(len(line) for line in lines) < 1000


def test_alias_bomb_one_line_from_train_and_check(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(nested_bomb())
    assert len(path.read_bytes()) < 500
    for res in run_many([("train", path), ("check", path)]):
        assert res.returncode == 2 and "Traceback" not in res.stderr, describe(res)
        assert len(error_lines(res.stderr)) == 1 and len(res.stderr) < 1000, describe(res)
        line = error_lines(res.stderr)[0]
        assert line.startswith(f"error: {path}: data.dataset: Input is not a valid path") and line.endswith(
            "… (9 items))"
        )


def test_set_echoes_are_clipped():
    from medseg.config.load import apply_override

    with pytest.raises(MedsegError) as err:
        apply_override({}, "x" * 5000)
    assert (
        str(err.value) == "--set '" + "x" * 199 + "… (5000 characters): expected KEY=VALUE, e.g. --set train.epochs=2"
    )
    with pytest.raises(MedsegError) as err:
        apply_override({"train": {"epochs": 2}}, "train.epochs.x=1")
    assert str(err.value) == (
        "--set 'train.epochs.x=1': 'epochs' is a value, not a section; set the value itself: --set train.epochs=VALUE"
    )


def test_oversized_config_is_not_read_whole(tmp_path):
    path = tmp_path / "big.yaml"
    with path.open("wb") as fh:
        fh.truncate(5 * 10**9)  # sparse: 5 GB of zeros on disk without writing them
    with pytest.raises(MedsegError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: is larger than 1000 kB, not an experiment config; "
        "pass the path of a YAML file such as configs/demo.yaml"
    )
