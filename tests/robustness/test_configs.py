"""Bad configs: ``medseg train CONFIG --set k=v`` refuses them with one ``error:`` line naming the
key (or file) and the fix, exit 2, and writes no run folder. All runs of the group happen in one
session fixture, two at a time."""

from __future__ import annotations

import os

import pytest

from tests.robustness.conftest import (
    DEMO,
    IS_ROOT,
    TINY_TRAIN,
    assert_clean_error,
    describe,
    params_skipping_as_root,
    run_many,
)


def _readonly_parent(root):
    ro = root / "readonly"
    ro.mkdir(exist_ok=True)
    os.chmod(ro, 0o555)
    return ro / "runs"


# case -> (overrides (a callable of the case folder gives the output_dir), name that must appear, problem words)
CONFIG_CASES = {
    "unknown_key": (["--set", "train.learning_rate=0.1"], "train.learning_rate", ("unknown",)),
    "wrong_type_epochs_abc": (["--set", "train.epochs=abc"], "train.epochs", ("integer",)),
    "negative_patch_size": (["--set", "sampling.patch_size=[-16,16,16]"], "patch_size", ("positive",)),
    "patch_not_multiple_of_strides": (["--set", "sampling.patch_size=[18,16,16]"], "patch_size", ("multiple",)),
    "missing_dataset_folder": (
        ["--set", "data.dataset={root}/no_such_dataset"],
        "no_such_dataset",
        ("not found", "no such", "does not exist"),
    ),
    "output_dir_under_a_file": (
        ["--set", "train.output_dir={root}/a_file/runs"],
        "a_file",
        ("not a directory", "cannot create"),
    ),
    "output_dir_read_only": (
        ["--set", "train.output_dir={readonly}"],
        "readonly",
        ("permission", "writable", "cannot create"),
    ),
    "set_without_equals": (["--set", "train.epochs"], "train.epochs", ("KEY=VALUE", "expected")),
    "yaml_syntax_error": (["--config", "{root}/broken.yaml"], "broken.yaml", ("YAML", "syntax")),
    "negative_epochs": (["--set", "train.epochs=-3"], "train.epochs", ("greater than", "positive")),
}


# patch larger than every image: padding to the patch size is documented, so exit 0 WITH a warning
# naming sampling.patch_size is acceptable; silently training on mostly padding is not
@pytest.fixture(scope="session")
def config_runs(robust_root, good_dataset):
    root = robust_root / "configs"
    root.mkdir()
    (root / "a_file").write_text("not a folder")
    (root / "broken.yaml").write_text("data:\n  dataset: x\ntrain: [epochs: 2\n")
    readonly = _readonly_parent(root) if not IS_ROOT else root / "readonly_unused"
    calls, expect = [], {}
    for case, (overrides, name, words) in CONFIG_CASES.items():
        args = [a.format(root=root, readonly=readonly) for a in overrides]
        config = DEMO
        if args[0] == "--config":
            config, args = args[1], []
        out = root / "runs" / case
        calls.append(
            (
                "train",
                config,
                *TINY_TRAIN,
                "--set",
                f"data.dataset={good_dataset}",
                "--set",
                f"train.output_dir={out}",
                *args,
            )
        )
        expect[case] = (name, words, out)
    if IS_ROOT:  # nothing to run: the test is skipped
        calls = [c for c, case in zip(calls, CONFIG_CASES) if case != "output_dir_read_only"]
        cases = [c for c in CONFIG_CASES if c != "output_dir_read_only"]
    else:
        cases = list(CONFIG_CASES)
    patch_out = root / "runs" / "patch_larger_than_images"
    calls.append(
        (
            "train",
            DEMO,
            *TINY_TRAIN,
            "--set",
            f"data.dataset={good_dataset}",
            "--set",
            f"train.output_dir={patch_out}",
            "--set",
            "sampling.patch_size=[64,64,64]",
        )
    )
    results = run_many(calls)
    runs = {case: (res, *expect[case]) for case, res in zip(cases, results)}
    runs["patch_larger_than_images"] = (results[-1], "patch_size", ("larger", "pad"), patch_out)
    return runs


@pytest.mark.parametrize(
    "case", params_skipping_as_root(CONFIG_CASES, {"output_dir_read_only": "a read-only folder stays writable"})
)
def test_bad_config(config_runs, case):
    res, name, words, out = config_runs[case]
    assert_clean_error(res, name, words, code=2)
    assert not (out.is_dir() and any(out.iterdir())), f"run folder written: {list(out.iterdir())}"


def test_patch_larger_than_every_image(config_runs):
    res, name, words, out = config_runs["patch_larger_than_images"]
    assert "Traceback" not in res.stderr, describe(res)
    if res.returncode == 0:
        warned = [line for line in res.stderr.splitlines() if line.startswith("warning:") and name in line]
        assert warned, "exit 0 without a 'warning:' line naming sampling.patch_size\n" + describe(res)
    else:
        assert_clean_error(res, name, words, code=2)
