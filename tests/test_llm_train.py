"""LoRA fine-tuning, selection by validation macro-F1, resume and merge, on a tiny in-process LM.

The tiny model is a 2-layer Llama over a character-level vocabulary built from the data, so
training steps take milliseconds; the data is a real BMELD slice (Chinese).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    TrainerCallback,
)

from conftest import BMELD
from erckit.cli import main
from erckit.config import load_config
from erckit.formats import read_dialogues
from erckit.formats.jsonl import dump
from erckit.labels import LABELS
from erckit.llm.chat import context_text, get_template
from erckit.llm.merge import merge_adapter
from erckit.llm.record import RunRecord
from erckit.llm.train import train_llm
from erckit.models import store_calibration
from erckit.prompts import TEMPLATES

pytestmark = pytest.mark.needs_data  # every test here trains on a real BMELD slice

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]


def char_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """One token per character seen in `texts` (plus the special tokens)."""
    vocab = {token: i for i, token in enumerate(SPECIAL)}
    for text in texts:
        for ch in text:
            vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def build_setup(folder: Path, extra_chars: str = "") -> dict:
    """A real BMELD slice as JSON lines and a tiny Llama over its characters (plus `extra_chars`)."""
    train = read_dialogues(BMELD / "train_sent_emo.csv")[:12]
    dev = read_dialogues(BMELD / "dev_sent_emo.csv")[:3]
    (folder / "train.jsonl").write_text(dump(train), encoding="utf-8")
    (folder / "dev.jsonl").write_text(dump(dev), encoding="utf-8")
    template_text = "".join(str(v) for v in TEMPLATES["zh"].__dict__.values())
    texts = [u.text for d in train + dev for u in d.utterances]
    tokenizer = char_tokenizer([*texts, template_text, "ABCDEFGHIJ, <>#" + "".join(LABELS) + extra_chars])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, initializer_range=0.3,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    base = folder / "tiny-base"
    LlamaForCausalLM(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    return {"folder": folder, "base": base, "train": folder / "train.jsonl", "dev": folder / "dev.jsonl",
            "train_dialogues": train, "dev_dialogues": dev}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return build_setup(tmp_path_factory.mktemp("llm"))


def recipe(setup: dict, out: Path, *extra: str):
    return load_config(None, [
        "model=llm", f"out={out}", f"data.train={setup['train']}", f"data.validation={setup['dev']}",
        f"llm.model={setup['base']}", "llm.template=plain", "llm.lora.rank=8", "llm.lora.alpha=16",
        "llm.prompt.window=3", "llm.max_steps=24", "llm.eval_steps=8", "llm.lr=0.01", "llm.batch_size=8",
        "llm.scheduler=constant", "llm.logging_steps=4", "llm.eval_batch_size=16", *extra,
    ])


class Snapshot(TrainerCallback):
    """Copies of the base and LoRA weights when training starts and ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}


def test_lora_changes_adapters_only_loss_falls_and_best_is_kept(setup, tmp_path):
    snapshot = Snapshot()
    config = recipe(setup, tmp_path / "run")
    summary = train_llm(config, setup["train_dialogues"], setup["dev_dialogues"], tmp_path / "run", [snapshot])
    lora = [n for n in snapshot.before if "lora_" in n]
    base = [n for n in snapshot.before if "lora_" not in n]
    assert lora and base
    assert any(not torch.equal(snapshot.before[n], snapshot.after[n]) for n in lora if "lora_B" in n)
    assert all(torch.equal(snapshot.before[n], snapshot.after[n]) for n in base)
    losses = [h["loss"] for h in summary["history"] if "loss" in h]
    assert losses[-1] < losses[0]
    evals = [h for h in summary["history"] if "eval_macro_f1" in h]
    assert [h["step"] for h in evals] == [8, 16, 24]
    best = max(evals, key=lambda h: (h["eval_macro_f1"], -h["step"]))
    assert summary["best_macro_f1"] == pytest.approx(best["eval_macro_f1"])
    assert summary["best_checkpoint"].endswith(f"checkpoint-{best['step']}")
    best_weights = load_file(str(Path(summary["best_checkpoint"]) / "adapter_model.safetensors"))
    exported = load_file(str(tmp_path / "run" / "best" / "adapter_model.safetensors"))
    assert all(torch.equal(best_weights[k], exported[k]) for k in best_weights)
    assert (tmp_path / "run" / "training.png").exists()


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt  # a kill, as far as the run is concerned


@pytest.mark.integration
@pytest.mark.parametrize("clock", [1000.0, None], ids=["clock-kept", "checkpoint-before-the-clock"])
def test_killed_run_resumes_at_the_right_step(clock, setup, tmp_path, capsys):
    out = tmp_path / "run"
    config = recipe(setup, out)
    with pytest.raises(KeyboardInterrupt):
        train_llm(config, setup["train_dialogues"], setup["dev_dialogues"], out, [StopAt(13)])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-8"]
    state_file = out / "checkpoint-8" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert 0 < state["stateful_callbacks"]["TrainingClock"]["args"]["seconds"] < 600  # the time to step 8
    if clock is None:  # a checkpoint of an erckit that kept no clock
        del state["stateful_callbacks"]["TrainingClock"]
    else:
        state["stateful_callbacks"]["TrainingClock"]["args"]["seconds"] = clock  # as if the first part took longer
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    summary = train_llm(config, setup["train_dialogues"], setup["dev_dialogues"], out)
    assert f"resuming {out} from checkpoint-8" in capsys.readouterr().out
    assert summary["global_step"] == 24
    assert (clock or 0) < summary["train_seconds"] < (clock or 0) + 600  # the resumed part added to the first's
    assert summary["tokens_per_epoch"] > sum(len(d.utterances) for d in setup["train_dialogues"])
    steps = [h["step"] for h in summary["history"] if "loss" in h]
    assert steps == sorted(set(steps)) and steps[-1] == 24  # every logged step once, none repeated


def zero_lora_b(adapter: Path) -> None:
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in weights.items()},
              str(adapter / "adapter_model.safetensors"))


@pytest.mark.integration
def test_select_picks_highest_macro_f1_not_last_not_lowest_loss_and_resumes_after_a_kill(setup, tmp_path, capsys,
                                                                                         monkeypatch):
    trained = tmp_path / "trained"
    config = recipe(setup, trained, f"data.train={setup['dev']}", "llm.max_steps=80", "llm.eval_steps=80",
                    "llm.lr=0.02", "llm.lora.rank=16", "llm.lora.alpha=32")
    train_llm(config, setup["dev_dialogues"], setup["dev_dialogues"], trained)  # overfit validation: a good adapter
    run = tmp_path / "elsewhere"  # a run made elsewhere: checkpoint-N folders of adapters
    shutil.copytree(trained / "best", run / "checkpoint-5")
    shutil.copytree(trained / "best", run / "checkpoint-15")
    zero_lora_b(run / "checkpoint-15")  # the last checkpoint: a no-op adapter (the untrained base)
    state = {"log_history": [{"step": 5, "loss": 2.0}, {"step": 15, "loss": 0.1}]}  # last has the lowest loss
    (run / "checkpoint-15" / "trainer_state.json").write_text(json.dumps(state))
    out = tmp_path / "select.json"
    args = ["select", "--run", str(run), "--base", str(setup["base"]), "--validation", str(setup["dev"]),
            "--template", "plain", "--window", "3", "--out", str(out)]
    assert main(args) == 0
    ranking = json.loads(out.read_text())["ranking"]
    assert [Path(r["checkpoint"]).name for r in ranking] == ["checkpoint-5", "checkpoint-15"]
    assert ranking[0]["macro_f1"] > ranking[1]["macro_f1"]
    assert "best: " in capsys.readouterr().out
    assert not out.with_name("select.json.partial").exists()  # the progress file goes once the ranking is written

    from erckit.llm import select

    loaded, real = [], select.load_engine

    def killed_at_the_second(run, *rest):  # a kill while the second checkpoint is scored
        loaded.append(run)
        if len(loaded) == 2:
            raise KeyboardInterrupt
        return real(run, *rest)

    out.unlink()
    monkeypatch.setattr(select, "load_engine", killed_at_the_second)
    assert main(args) == 130
    assert "the checkpoints scored so far are kept in" in capsys.readouterr().err and not out.exists()
    loaded.clear()
    monkeypatch.setattr(select, "load_engine", lambda run, *rest: loaded.append(run) or real(run, *rest))
    assert main(args) == 0  # the same command: only the checkpoint left is scored
    assert len(loaded) == 1 and json.loads(out.read_text())["ranking"] == ranking


def test_merged_logits_equal_adapter_logits_and_template_is_exported(setup, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(setup["base"])
    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    template = get_template("gemma")
    record = RunRecord(str(setup["base"]), "gemma")
    merged_folder = merge_adapter(record, tmp_path / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_folder)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(merged_folder)
    prompt = context_text(template, "现在，你是一名情感和情绪分析专家。")
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected, got = peft_model.eval()(input_ids=ids).logits, merged(input_ids=ids).logits
    assert not torch.allclose(expected, AutoModelForCausalLM.from_pretrained(setup["base"])(input_ids=ids).logits)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "现在，你是一名情感和情绪分析专家。"}], tokenize=False)
    assert chat == prompt
    assert json.loads((merged_folder / "erckit_llm.json").read_text())["template"] == "gemma"


def test_cli_train_predict_combine_evaluate_with_an_llm_run(setup, tmp_path):
    """The LLM path end to end from the CLI: train -> predict (score, then generate) -> combine -> evaluate."""
    run = tmp_path / "run"
    overrides = [f"out={run}", f"data.train={setup['train']}", f"data.validation={setup['dev']}",
                 f"llm.model={setup['base']}", "llm.prompt.window=3", "llm.max_steps=8", "llm.eval_steps=4",
                 "llm.lr=0.01", "llm.eval_batch_size=16"]
    assert main(["train", "--config", "gemma-270m-lora", *overrides]) == 0
    info = json.loads((run / "erckit_model.json").read_text())
    assert info["type"] == "llm" and info["finished"] and info["summary"]["prompt"]["window"] == 3
    assert json.loads((run / "best" / "erckit_llm.json").read_text())["template"] == "plain"
    preds = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(run), "--input", str(setup["dev"]), "--out", str(preds)]) == 0
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    ids = [u.id for d in setup["dev_dialogues"] for u in d.utterances]
    assert [r["id"] for r in rows] == ids and all(r["label"] in LABELS for r in rows)
    assert main(["combine", "--predictions", str(preds), "--raw", str(setup["dev"]), "--out", str(tmp_path / "l.jsonl")]) == 0
    assert main(["evaluate", "--predictions", str(preds), "--gold", str(setup["dev"])]) == 0
    # calibration of an LLM run: fitted from its label scores, stored, applied by predict (score backend)
    assert main(["calibrate", "--model", str(run), "--validation", str(setup["dev"]), "--force"]) == 0
    assert "calibration" in json.loads((run / "erckit_model.json").read_text())
    store_calibration(run, {label: 50.0 if label == "Fear" else 0.0 for label in LABELS}, {})
    calibrated = tmp_path / "calibrated.jsonl"
    assert main(["predict", "--model", str(run), "--input", str(setup["dev"]), "--out", str(calibrated)]) == 0
    recalibrated = [json.loads(line) for line in calibrated.read_text(encoding="utf-8").splitlines()]
    assert all(r["label"] == "Fear" for r in recalibrated)
    assert [r["probs"] for r in recalibrated] == [r["probs"] for r in rows]  # the model's own probabilities
    store_calibration(run, None, {})
    generated = tmp_path / "generated.jsonl"
    args = ["predict", "--model", str(setup["base"]), "--adapter", str(run / "best"), "--input", str(setup["dev"]),
            "--window", "3", "--backend", "generate", "--unparsed", "score", "--out", str(generated)]
    assert main(args) == 0
    assert [json.loads(line)["id"] for line in generated.read_text(encoding="utf-8").splitlines()] == ids


def test_a_full_fine_tuning_run_predicts_from_its_best_model(setup, tmp_path):
    run = tmp_path / "full"
    overrides = [f"out={run}", f"data.train={setup['train']}", f"data.validation={setup['dev']}",
                 f"llm.model={setup['base']}", "llm.template=plain", "llm.finetuning=full", "llm.prompt.window=3",
                 "llm.max_steps=4", "llm.eval_steps=4", "llm.lr=0.001", "llm.batch_size=8", "llm.eval_batch_size=16"]
    assert main(["train", "--config", "gemma-270m-lora", *overrides]) == 0
    assert (run / "best" / "model.safetensors").exists() and not (run / "best" / "adapter_config.json").exists()
    preds = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(run), "--input", str(setup["dev"]), "--out", str(preds)]) == 0
    ids = [u.id for d in setup["dev_dialogues"] for u in d.utterances]
    assert [json.loads(line)["id"] for line in preds.read_text(encoding="utf-8").splitlines()] == ids


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0: "
                 "file write failed"),
    "safetensors",
])
def test_a_checkpoint_the_trainer_cannot_write_ends_in_one_line(error, setup, tmp_path, monkeypatch):
    """A full disk under the Trainer's torch.save or safetensors: one line naming the run folder, not a traceback."""
    from safetensors import SafetensorError
    from transformers import Trainer

    from erckit.data import DataError

    def full(self, *args, **kwargs):
        raise error if isinstance(error, Exception) else SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(Trainer, "_save_checkpoint", full)
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"cannot write a checkpoint: .*(file write failed|os error 28)") as raised:
        train_llm(recipe(setup, out), setup["train_dialogues"], setup["dev_dialogues"], out)
    assert str(out) in str(raised.value) and len(str(raised.value).splitlines()) == 1


def test_several_gpus_seen_by_one_unlaunched_process_are_refused_before_training(setup, tmp_path, monkeypatch, capsys):
    from erckit.cli import main
    from erckit.config import ConfigError
    from erckit.llm.distributed import check_one_gpu_per_process

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # a 4-GPU host, no launcher
    out = tmp_path / "run"
    overrides = [f"out={out}", f"data.train={setup['train']}", f"data.validation={setup['dev']}",
                 f"llm.model={setup['base']}", "llm.template=plain", "llm.max_steps=2"]
    assert main(["train", "--config", "gemma-270m-lora", *overrides]) == 2
    error = capsys.readouterr().err
    assert "4 GPUs are visible to one process" in error and "torchrun --nproc_per_node 4" in error
    assert not out.exists()  # refused with the recipe's other checks, before the run folder is written
    monkeypatch.setenv("LOCAL_RANK", "0")  # started by torchrun / accelerate: one GPU per process
    monkeypatch.setenv("WORLD_SIZE", "4")
    check_one_gpu_per_process(4)
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError):
        check_one_gpu_per_process(2)
    check_one_gpu_per_process(1)
