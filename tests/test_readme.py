"""The README's commands work as written: every `medseg COMMAND --option` it shows names a real
command and real options, and the "your own data" steps run on a tiny dataset."""

import re
import subprocess
from pathlib import Path

from conftest import MEDSEG

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    """Every `medseg ...` command line in code blocks and inline code spans."""
    fences = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.S | re.M)  # fence by fence: prose is never a block
    blocks = [body for lang, body in fences if lang in ("", "bash")]
    inline = re.findall(r"`([^`\n]*medseg [a-z][^`\n]*)`", README)
    lines = [line for block in blocks for line in block.splitlines()] + inline
    found = []
    for line in lines:
        line = line.split("  #")[0]
        for m in re.finditer(r"(?:^|[\s;(])(?:-m )?medseg ([a-z]+\b.*?)(?=$|;|\)|&&)", line):
            found.append(m.group(1).strip())
    return found


def test_every_readme_command_and_option_exists():
    commands = readme_commands()
    assert len(commands) >= 25
    helps: dict[str, str] = {}
    for cmd in commands:
        sub = cmd.split()[0]
        if sub not in helps:
            res = subprocess.run([*MEDSEG, sub, "--help"], capture_output=True, text=True)
            assert res.returncode == 0, f"README shows `medseg {cmd}` but `medseg {sub}` does not exist"
            helps[sub] = res.stdout
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", cmd):
            assert option in helps[sub], f"README: `medseg {cmd}` uses {option}, which `medseg {sub}` does not have"


def test_your_own_data_steps_shrunk(tmp_path):
    """Layout -> check -> plan -> train (with the plan) on a tiny synthetic dataset."""
    data = tmp_path / "data"
    assert subprocess.run([*MEDSEG, "synth", data, "--cases", "3", "--shape", "32,32,24"], capture_output=True).returncode == 0
    check = subprocess.run([*MEDSEG, "check", data], capture_output=True, text=True)
    assert check.returncode == 0 and "clean" in check.stdout
    plan = subprocess.run([*MEDSEG, "plan", data, "--out", tmp_path / "plan.yaml"], capture_output=True, text=True)
    assert plan.returncode == 0 and (tmp_path / "plan.yaml").is_file()
    cfg = tmp_path / "my.yaml"
    cfg.write_text(f"data: {{dataset: {data}, plan: {tmp_path / 'plan.yaml'}}}\nmodel: {{channels: [4, 8, 16], strides: [2, 2]}}\n"
                   f"train: {{epochs: 1, output_dir: {tmp_path / 'runs'}}}\ntracking: {{enabled: false}}\n")
    train = subprocess.run([*MEDSEG, "train", cfg, "--quiet"], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    assert "plan.yaml" in {p.name for p in next((tmp_path / "runs").iterdir()).iterdir()}


def test_disk_cache_and_thread_loader(tmp_path):
    """data.cache_dir (PersistentDataset) is filled once and reused; data.thread_loader trains."""
    data = tmp_path / "data"
    assert subprocess.run([*MEDSEG, "synth", data, "--cases", "3", "--shape", "32,32,24"], capture_output=True).returncode == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: {data}, cache_dir: {tmp_path / 'cache'}, thread_loader: true}}\n"
                   "preprocess: {target_spacing: [1.5, 1.5, 2.0]}\nsampling: {patch_size: [16, 16, 16]}\n"
                   f"model: {{channels: [4, 8, 16], strides: [2, 2]}}\ntrain: {{epochs: 1, output_dir: {tmp_path / 'runs'}}}\n"
                   "tracking: {enabled: false}\n")
    for _ in range(2):
        res = subprocess.run([*MEDSEG, "train", cfg, "--quiet"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.pt"))
        assert len(cached) == 3  # 2 training + 1 validation case, written once
