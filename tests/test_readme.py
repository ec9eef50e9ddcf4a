"""The README's and the documentation's commands work as written: every `medseg COMMAND --option`
shown in README.md or docs/**/*.md names a real command and real options, and the README's
"your own data" path (BraTS-like folder: copy the template, check, train, predict, evaluate) runs
as written on a tiny dataset."""

import re
import shutil
from pathlib import Path

import yaml
from conftest import cli

from medseg.cli.reference import command_options
from medseg.data.synthetic import write_dataset

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {
    "README.md": README,
    **{str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "docs").rglob("*.md"))},
}


def shown_commands(text: str) -> list[str]:
    """Every `medseg ...` command line in bash/plain code blocks and inline code spans of one page."""
    fences = re.findall(
        r"^\s*```(\w*)\n(.*?)^\s*```", text, flags=re.S | re.M
    )  # fence by fence: prose is never a block
    blocks = [body for lang, body in fences if lang in ("", "bash")]
    inline = re.findall(r"`([^`\n]*medseg [a-z][^`\n]*)`", text)
    lines = [line for block in blocks for line in block.splitlines()] + inline
    found = []
    for line in lines:
        line = line.split("  #")[0]
        for m in re.finditer(r"(?:^|[\s;(])(?:-m )?medseg ([a-z]+\b.*?)(?=$|;|\)|&&)", line):
            found.append(m.group(1).strip())
    return found


def test_every_shown_command_and_option_exists():
    options = command_options()
    total = 0
    for page, text in PAGES.items():
        for cmd in shown_commands(text):
            total += 1
            sub = cmd.split()[0]
            assert sub in options, f"{page} shows `medseg {cmd}` but `medseg {sub}` does not exist"
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", cmd):
                assert option in options[sub], (
                    f"{page}: `medseg {cmd}` uses {option}, which `medseg {sub}` does not have"
                )
    assert len(shown_commands(README)) >= 8 and total >= 60


def own_data_block() -> list[str]:
    """The README's "Your own data" bash block: its lines without comments, in order."""
    section = README.split("## 2. Your own data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def brats_like_folder(root: Path, cases: int) -> list[str]:
    """A tiny BraTS-like folder: <case>/<case>_flair.nii.gz and <case>/<case>_seg.nii.gz."""
    msd = root / "msd"
    write_dataset(msd, cases, shape=(32, 32, 24))
    ids = sorted(p.name.removesuffix(".nii.gz") for p in (msd / "imagesTr").glob("*.nii.gz"))
    for case in ids:
        (root / "brats" / case).mkdir(parents=True)
        shutil.copy(msd / "imagesTr" / f"{case}.nii.gz", root / "brats" / case / f"{case}_flair.nii.gz")
        shutil.copy(msd / "labelsTr" / f"{case}.nii.gz", root / "brats" / case / f"{case}_seg.nii.gz")
    return ids


def shrink(template: dict, data: Path, held_out: list[str], val: list[str]) -> dict:
    """The template as a user edits it (dataset, held-out and validation cases), shrunk for a CPU test."""
    cfg = dict(template)
    cfg["data"] = {**template["data"], "dataset": str(data), "exclude_cases": held_out, "val_cases": val}
    cfg["preprocess"] = {**template["preprocess"], "target_spacing": [1.5, 1.5, 2.0]}
    cfg["sampling"] = {**template["sampling"], "patch_size": [16, 16, 16], "samples_per_volume": 1}
    cfg["augment"] = {"preset": "light"}
    cfg["model"] = {"name": "unet", "channels": [4, 8, 16], "strides": [2, 2]}
    cfg["train"] = {
        **template["train"],
        "epochs": 1,
        "max_minutes": None,
        "val_every": 1,
        "batch_size": 1,
        "device": "cpu",
    }
    cfg["inference"] = {**template["inference"], "min_lesion_mm3": 0.0}
    cfg["tracking"] = {"enabled": False}
    return cfg


def test_your_own_data_path_runs_as_written(tmp_path):
    """cp the template -> set data.dataset / exclude_cases / val_cases -> check -> train -> predict the
    held-out cases -> evaluate, each medseg line exactly as the README shows it (the run folder filled in)."""
    lines = own_data_block()
    assert lines[0] == "cp configs/brats_wt_flair.yaml my.yaml"
    commands = [line for line in lines if line.startswith("medseg ")]
    assert [c.split()[1] for c in commands] == ["check", "train", "predict", "evaluate"]
    template = yaml.safe_load((ROOT / "configs" / "brats_wt_flair.yaml").read_text())
    assert template["data"]["layout"] == "pattern"
    assert (
        template["data"]["channels"] == ["{case}/{case}_flair.nii.gz"]
        and template["data"]["label"] == "{case}/{case}_seg.nii.gz"
    )
    ids = brats_like_folder(tmp_path, 4)
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(shrink(template, tmp_path / "brats", ids[-1:], ids[:1])))
    for command in commands:
        if "<run>" in command:
            runs = [p for p in (tmp_path / "runs" / "brats_wt_flair").iterdir() if (p / "best.pt").is_file()]
            assert len(runs) == 1
            command = command.replace("<run>", runs[0].name)
        res = cli(*command.split()[1:], cwd=tmp_path)
        assert res.returncode == 0, f"{command}: {res.stderr[-2000:]}"
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.nii.gz")) == [f"{ids[-1]}.nii.gz"]
    assert (tmp_path / "eval" / "cases.csv").is_file() and ids[-1] in (tmp_path / "eval" / "cases.csv").read_text()


def test_disk_cache_and_thread_loader(tmp_path):
    """data.cache_dir (PersistentDataset) is filled once and reused; data.thread_loader trains."""
    data = tmp_path / "data"
    write_dataset(data, 3, shape=(32, 32, 24))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{dataset: {data}, cache_dir: {tmp_path / 'cache'}, thread_loader: true}}\n"
        "preprocess: {target_spacing: [1.5, 1.5, 2.0]}\nsampling: {patch_size: [16, 16, 16]}\n"
        f"model: {{channels: [4, 8, 16], strides: [2, 2]}}\ntrain: {{epochs: 1, output_dir: {tmp_path / 'runs'}}}\n"
        "tracking: {enabled: false}\n"
    )
    for _ in range(2):
        res = cli("train", cfg, "--quiet")
        assert res.returncode == 0, res.stderr
        cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.pt"))
        assert len(cached) == 3  # 2 training + 1 validation case, written once
