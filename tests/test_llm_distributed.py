"""Two-process LoRA training with `torchrun --nproc_per_node 2` on CPU (gloo, DDP), twice.

The model is the Baichuan2-like stand-in (its own code, a tuple `gradient_checkpointing`, fused W_pack).
Both processes must agree on the best checkpoint (validation is scored in shards and gathered), only
rank 0 writes, best/ equals the best checkpoint and is written before the run is marked finished, the
gathered validation scores equal a single-process `erckit select`, and a second identical launch gives
the same adapter weights (the seed is set before the LoRA weights are drawn). Slow: about a minute (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from baichuan_tiny import build_baichuan_like
from conftest import BMELD, REPO
from erckit.cli import main
from erckit.formats import read_dialogues
from erckit.formats.jsonl import dump
from erckit.labels import LABELS
from erckit.prompts import TEMPLATES

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]  # trains on real BMELD slices

RECIPE = """model: llm
data: {{train: {train}, validation: {dev}}}
llm:
  model: {base}
  template: baichuan2
  trust_remote_code: true
  lora: {{rank: 8, alpha: 16, dropout: 0.0}}
  prompt: {{language: zh, window: 3}}
  max_length: 160
  max_steps: 6
  eval_steps: 3
  lr: 0.05
  scheduler: constant
  batch_size: 4
  eval_batch_size: 8
  logging_steps: 3
  precision: fp32
"""


def launch(config: Path, out: Path, logs: Path, *overrides: str) -> list[str]:
    """Run `torchrun --nproc_per_node 2 -m erckit train`; the stdout of rank 0 and rank 1."""
    command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--log-dir", str(logs),
               "--redirects", "3", "-m", "erckit", "train", "--config", str(config), f"out={out}", *overrides]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_MODULES_CACHE": str(logs / "modules")}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    outputs = [next(logs.rglob(f"attempt_0/{rank}/stdout.log")).read_text() for rank in (0, 1)]
    errors = [next(logs.rglob(f"attempt_0/{rank}/stderr.log")).read_text()[-3000:] for rank in (0, 1)]
    assert done.returncode == 0, errors
    return outputs


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def test_two_processes_agree_write_once_and_repeat(tmp_path):
    train = read_dialogues(BMELD / "train_sent_emo.csv")[:8]
    dev = read_dialogues(BMELD / "dev_sent_emo.csv")[:2]
    (tmp_path / "train.jsonl").write_text(dump(train), encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text(dump(dev), encoding="utf-8")
    texts = [u.text for d in train + dev for u in d.utterances]
    texts += ["".join(str(v) for v in TEMPLATES["zh"].__dict__.values()), " ".join(LABELS)] * 3
    base = build_baichuan_like(tmp_path / "tiny-baichuan", texts)
    config = tmp_path / "recipe.yaml"
    config.write_text(RECIPE.format(train=tmp_path / "train.jsonl", dev=tmp_path / "dev.jsonl", base=base))

    first, second = tmp_path / "first", tmp_path / "second"
    rank0, rank1 = launch(config, first, tmp_path / "logs-first")
    best_lines = [re.search(r"best checkpoint (\S+): validation macro-F1 (\S+)", out) for out in (rank0, rank1)]
    assert all(best_lines) and best_lines[0].groups() == best_lines[1].groups()  # both ranks: the same best
    assert f"wrote {first / 'best'}" in rank0 and "wrote " not in rank1  # only rank 0 writes
    info = json.loads((first / "erckit_model.json").read_text())
    best = Path(info["summary"]["best_checkpoint"])
    assert info["finished"] and str(best) == best_lines[0].group(1)
    assert (first / "best" / "adapter_model.safetensors").read_bytes() == (best / "adapter_model.safetensors").read_bytes()
    assert (first / "erckit_model.json").stat().st_mtime >= (first / "best" / "adapter_model.safetensors").stat().st_mtime

    # The gathered validation scores are those of the whole validation set, scored in one process.
    assert main(["select", "--run", str(first), "--validation", str(tmp_path / "dev.jsonl"), "--trust-remote-code",
                 "--out", str(tmp_path / "select.json")]) == 0  # the tiny model's tokenizer is code of its own
    single = {Path(r["checkpoint"]).name: r["macro_f1"] for r in json.loads((tmp_path / "select.json").read_text())["ranking"]}
    state = json.loads((first / "checkpoint-6" / "trainer_state.json").read_text())
    gathered = {f"checkpoint-{h['step']}": h["eval_macro_f1"] for h in state["log_history"] if "eval_macro_f1" in h}
    assert gathered.keys() == single.keys() == {"checkpoint-3", "checkpoint-6"}
    assert all(abs(gathered[k] - single[k]) < 1e-6 for k in single)

    launch(config, second, tmp_path / "logs-second")
    for folder in ("checkpoint-3", "checkpoint-6", "best"):
        one, two = adapter(first / folder), adapter(second / folder)
        assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in adapter(first / "best").items() if "lora_B" in k)


def test_checkpointed_layers_train_under_ddp(tmp_path):
    """The stand-in checkpoints its layers with reentrant autograd, as Baichuan2 does: under DDP that
    fails at the first backward unless DDP is told no parameter goes unused."""
    train = read_dialogues(BMELD / "train_sent_emo.csv")[:8]
    dev = read_dialogues(BMELD / "dev_sent_emo.csv")[:2]
    (tmp_path / "train.jsonl").write_text(dump(train), encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text(dump(dev), encoding="utf-8")
    texts = [u.text for d in train + dev for u in d.utterances] + [" ".join(LABELS)] * 3
    base = build_baichuan_like(tmp_path / "tiny-baichuan", texts)
    config = tmp_path / "recipe.yaml"
    config.write_text(RECIPE.format(train=tmp_path / "train.jsonl", dev=tmp_path / "dev.jsonl", base=base))
    launch(config, tmp_path / "run", tmp_path / "logs", "llm.gradient_checkpointing=true", "llm.max_steps=3")
    weights = adapter(tmp_path / "run" / "best")
    layer0 = [v for k, v in weights.items() if "layers.0." in k and "lora_B" in k]
    assert layer0 and all(not torch.equal(v, torch.zeros_like(v)) for v in layer0)  # gradients reached layer 0
