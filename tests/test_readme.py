"""The README's commands, as written: the shell blocks of its "Quick start" and "Label your own files"
sections are read from README.md itself and run in a fresh folder.

The only change is the training budget, made through the recipe overrides the README documents
(`train.epochs=1`), so the test stays short. `make test` is checked as a dry run (`make -n`): running the
suite inside the suite would be recursion.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE

pytestmark = pytest.mark.slow  # trains the encoder twice (one epoch each): about a minute or two on 2 cores

BUDGET = "train.epochs=1"
BIN = Path(sys.executable).parent  # where `erckit` is installed beside this python


def shell_blocks(section: str) -> list[str]:
    """The ```bash blocks of one README section, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no section {section!r}"
    blocks = re.findall(r"^```bash\n(.*?)^```", match.group(1), re.MULTILINE | re.DOTALL)
    assert blocks, f"README.md section {section!r} has no bash block"
    return blocks


def commands(block: str) -> list[str]:
    """A block's commands: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line]


def run(command: str, cwd: Path) -> None:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(command, check=False, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_the_own_files_commands_run_as_written_in_a_fresh_folder(tmp_path):
    for split in ("train", "validation", "test"):  # "your files", named as the README names them
        shutil.copy(SAMPLE / f"annotation_{split}.json", tmp_path / f"annotation_{split}.json")
    shutil.copy(SAMPLE / "annotation_test.json", tmp_path / "annotation_test_labelled.json")  # the sample's is labelled
    ran = []
    for block in shell_blocks("Label your own files"):
        for command in commands(block):
            if command.startswith("erckit train"):
                command = f"{command} {BUDGET}"
            run(command, tmp_path)
            ran.append(command.split()[1])
    assert ran == ["train", "predict", "combine", "evaluate"]
    assert (tmp_path / "test_label.json").is_file() and (tmp_path / "runs" / "report" / "metrics.json").is_file()


def test_the_quick_start_runs_on_a_fresh_copy_of_the_repository(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, tracked.split("\0")):
        if (REPO / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tmp_path / name)
    # this python's environment stands in for .venv (`-o install`: not reinstalled); the demo's budget lowered
    settings = f"BIN={BIN} -o install DEMO_RECIPE='{BUDGET} train.lr=1e-4 train.head_lr=2e-3 encoder.freeze_layers=6'"
    targets = [command.split()[1] for block in shell_blocks("Quick start") for command in commands(block)]
    assert targets == ["demo", "test"]
    run(f"make demo {settings}", tmp_path)
    assert (tmp_path / "runs" / "demo" / "test_label.json").is_file()
    assert (tmp_path / "runs" / "demo" / "report" / "confusion.png").is_file()
    run(f"make -n test {settings}", tmp_path)
