"""Multi-process and precision settings of LLM training, checked on CPU.

GPU-only findings get the closest CPU check: ZeRO-3 (needs deepspeed and GPUs) — the TrainingArguments
exist before the model is loaded, which is what makes `from_pretrained` use zero.Init; QLoRA under
torchrun (needs CUDA and bitsandbytes) — each rank's device map is its own GPU; bf16 emulation (V100/T4)
— the precision rule is checked with the machine's answers given; FSDP (falls back to DDP on CPU) —
the plugin is switched to full state dicts and an export without adapter weights is refused.
"""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import SAMPLE_DATA
from erckit.config import ConfigError
from erckit.llm import train as train_module
from erckit.llm.chat import get_template
from erckit.llm.distributed import gather_rows, validation_share
from erckit.llm.loading import native_bf16, precision_dtype, rank_device_map, run_dtype
from erckit.llm.scoring import forward_parameters, unwrapped
from erckit.llm.train import (
    export_checkpoint,
    full_fsdp_state,
    load_trainable,
    precision_flags,
    train_llm,
    training_arguments,
    training_dtype,
)
from llm_tiny import tiny_model, tiny_tokenizer
from test_llm_train import recipe, setup  # noqa: F401


def test_validation_shares_cover_everything_once_and_gather_back():
    for count, size in ((10, 3), (7, 2), (2, 4), (12, 6)):
        shares = [validation_share(count, rank, size, parameters_sharded=False) for rank in range(size)]
        assert sorted(i for s in shares for i in s) == list(range(count))
        # FSDP / ZeRO-3: every process scores everything, so all make the same (collective) forward calls
        assert {tuple(validation_share(count, rank, size, parameters_sharded=True)) for rank in range(size)} == {
            tuple(range(count))}
    rows = np.arange(20, dtype=float).reshape(10, 2)
    mine = validation_share(10, 0, 1, parameters_sharded=False)
    np.testing.assert_array_equal(gather_rows(mine, rows[mine], 10), rows)


def test_the_loss_looks_through_the_training_wrapper_and_the_adapter():
    from peft import LoraConfig, get_peft_model

    base = tiny_model(tiny_tokenizer())
    adapted = get_peft_model(base, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    wrapped = torch.nn.DataParallel(adapted)  # as DDP or DeepSpeed: the Trainer hands compute_loss the wrapper
    assert unwrapped(wrapped) is base
    assert {"position_ids", "logits_to_keep"} <= forward_parameters(wrapped)  # the wrapper's forward is (*a, **kw)


@pytest.mark.needs_data
def test_adapters_do_not_look_for_unused_parameters(setup, tmp_path):  # noqa: F811
    args = training_arguments(recipe(setup, tmp_path / "run"), tmp_path / "run", evaluate=True)
    assert args.ddp_find_unused_parameters is False


@pytest.mark.needs_data
def test_lora_weights_are_the_same_in_every_process_and_run(setup, tmp_path):  # noqa: F811
    config = recipe(setup, tmp_path / "run")
    args = training_arguments(config, tmp_path / "run", evaluate=True)
    first, _ = load_trainable(config.llm, args, seed=0)
    torch.rand(100)  # another process, or another run, is at another point of its random stream
    second, _ = load_trainable(config.llm, args, seed=0)
    lora = {n: p for n, p in first.named_parameters() if "lora_A" in n}
    assert lora and all(torch.equal(p, dict(second.named_parameters())[n]) for n, p in lora.items())


@pytest.mark.needs_data
def test_training_arguments_exist_before_the_model_is_loaded(setup, tmp_path, monkeypatch):  # noqa: F811
    events = []
    make_args, load = train_module.training_arguments, train_module.load_causal_lm

    def recorded_args(*args, **kwargs):
        events.append("TrainingArguments")
        return make_args(*args, **kwargs)

    def recorded_load(*args, **kwargs):
        events.append("model")
        raise KeyboardInterrupt  # enough: the order is known

    monkeypatch.setattr(train_module, "training_arguments", recorded_args)
    monkeypatch.setattr(train_module, "load_causal_lm", recorded_load)
    with pytest.raises(KeyboardInterrupt):
        train_llm(recipe(setup, tmp_path / "run"), setup["train_dialogues"], setup["dev_dialogues"], tmp_path / "run")
    assert events == ["TrainingArguments", "model"]
    del load


def test_bf16_only_where_the_gpu_has_it_natively(monkeypatch):
    assert native_bf16() == (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPUs this rule is about, without one
    for capability, native in (((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)):  # V100, T4, A100, H100
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert native_bf16() is native, capability
    assert precision_flags("auto", cuda=True, bf16=False) == {"bf16": False, "fp16": True}  # V100, T4
    assert precision_flags("auto", cuda=True, bf16=True) == {"bf16": True, "fp16": False}
    assert precision_flags("auto", cuda=False) == {"bf16": False, "fp16": False}
    assert precision_dtype("auto", cuda=True, bf16=False) == torch.float16
    assert precision_dtype("auto", cuda=False) == torch.float32
    with pytest.raises(ConfigError, match="needs a GPU"):
        precision_flags("bf16", cuda=False)


def test_a_runs_prediction_dtype_is_its_training_precision_on_a_gpu_only():
    assert run_dtype("auto", "fp16", None, cuda=True) == "fp16"  # not bf16 on a GPU that has it: as trained
    assert run_dtype("auto", "fp16", "auto", cuda=True) == "fp16"  # spread over the GPUs
    assert run_dtype("auto", "fp16", "cpu", cuda=True) == "auto"  # the CPU: float32, whatever the training
    assert run_dtype("auto", "bf16", None, cuda=False) == "auto"
    assert run_dtype("fp32", "fp16", None, cuda=True) == "fp32"  # the user's --dtype wins
    assert run_dtype("auto", "auto", "cuda:0", cuda=True) == "auto"  # a run (or a plain model) without one
    assert run_dtype("auto", "bf16", None, cuda=True, bf16=False) == "auto"  # a T4: fp16 by the rule, not emulated bf16
    assert run_dtype("auto", "bf16", None, cuda=True, bf16=True) == "bf16"


def test_a_resumed_prediction_must_match_the_dtype_the_weights_load_in():
    from erckit.llm.chat import get_template
    from erckit.llm.engines import EngineOptions, weights_dtype
    from erckit.llm.record import RunRecord
    from erckit.llm.run import LLMRun

    run = LLMRun("base", None, RunRecord("base", "plain", precision="fp16"), get_template("plain"))
    cpu = torch.device("cpu").type
    assert weights_dtype(run, "score", EngineOptions(device=cpu)) == "float32"  # auto on the CPU, whatever the run's
    assert weights_dtype(run, "score", EngineOptions(dtype="bf16", device=cpu)) == "bfloat16"
    assert weights_dtype(run, "vllm", EngineOptions(dtype="fp16", device=cpu)) == "half"


def test_the_base_is_loaded_in_the_precision_of_the_run():
    def llm(precision, finetuning="lora"):
        return SimpleNamespace(precision=precision, finetuning=finetuning)

    assert training_dtype(llm("fp32"), cuda=True, bf16=True) == torch.float32  # fp32 trains fp32
    assert training_dtype(llm("fp16"), cuda=True, bf16=True) == torch.float16  # fp16 loads fp16
    assert training_dtype(llm("bf16"), cuda=True) == torch.bfloat16
    assert training_dtype(llm("auto"), cuda=True, bf16=False) == torch.float16
    assert training_dtype(llm("auto", "qlora"), cuda=True, bf16=True) == torch.bfloat16  # 4-bit compute dtype
    assert training_dtype(llm("fp16", "full"), cuda=True) == torch.float32  # fp32 master weights


def test_a_quantised_model_goes_to_its_own_process_gpu():
    assert rank_device_map(True, cuda=True, rank=3) == {"": 3}
    assert rank_device_map(False, cuda=True, rank=3) is None  # the Trainer places unquantised models
    assert rank_device_map(True, cuda=False) is None


def test_fsdp_saves_full_state_dicts_and_an_export_needs_weights(tmp_path):
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(state_dict_type="SHARDED_STATE_DICT")
    trainer = SimpleNamespace(is_fsdp_enabled=True, accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)))
    full_fsdp_state(trainer)
    assert str(plugin.state_dict_type).endswith("FULL_STATE_DICT")
    sharded = tmp_path / "checkpoint-8"
    (sharded / "pytorch_model_fsdp_0").mkdir(parents=True)
    (sharded / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds no adapter or model weights"):
        export_checkpoint(sharded, tmp_path / "best")


def test_an_export_replaces_best_whole(tmp_path):
    """An earlier export's files (a full model's shards) never stay beside a later one's adapter."""
    full, adapter, best = tmp_path / "checkpoint-4", tmp_path / "checkpoint-8", tmp_path / "best"
    for folder, names in ((full, ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                  "model.safetensors.index.json", "modeling_x.py"]),
                          (adapter, ["adapter_config.json", "adapter_model.safetensors", "optimizer.pt"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(folder.name, encoding="utf-8")
    export_checkpoint(full, best)
    export_checkpoint(adapter, best)
    assert sorted(p.name for p in best.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (best / "adapter_model.safetensors").read_text(encoding="utf-8") == "checkpoint-8"


@pytest.mark.needs_data
def test_a_run_resumed_from_its_last_checkpoint_trains_no_extra_step(setup, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    config = recipe(setup, out, "llm.max_steps=8", "llm.eval_steps=4")
    first = train_llm(config, setup["train_dialogues"], setup["dev_dialogues"], out)
    shutil.rmtree(out / "best")  # killed after the last checkpoint, before the export
    capsys.readouterr()
    again = train_llm(config, setup["train_dialogues"], setup["dev_dialogues"], out)
    assert "nothing left to train" in capsys.readouterr().out
    assert again["global_step"] == first["global_step"] == 8
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert again["best_checkpoint"] == first["best_checkpoint"]
    assert (out / "best" / "adapter_model.safetensors").read_bytes() == (
        out / first["best_checkpoint"].rsplit("/", 1)[-1] / "adapter_model.safetensors").read_bytes()


@pytest.mark.needs_data
def test_a_run_without_validation_resumed_after_its_last_checkpoint_exports_the_trained_weights(setup, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    config = recipe(setup, out, "llm.max_steps=4", "llm.eval_steps=4")
    first = train_llm(config, setup["train_dialogues"], None, out)
    trained = (out / "best" / "adapter_model.safetensors").read_bytes()
    assert trained == (out / "checkpoint-4" / "adapter_model.safetensors").read_bytes()
    shutil.rmtree(out / "best")  # killed after the last checkpoint, before the export
    again = train_llm(config, setup["train_dialogues"], None, out)
    assert again["global_step"] == first["global_step"] == 4 and again["best_checkpoint"] is None
    assert (out / "best" / "adapter_model.safetensors").read_bytes() == trained  # not a fresh, untrained LoRA


def test_qwen25_template_has_qwen25s_system_prompt():
    template = get_template("qwen2.5")
    assert "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." in template.prefix
    import yaml

    from erckit.recipes import path

    recipe_file = path("qwen2.5-7b-instruct-lora")
    assert yaml.safe_load(recipe_file.read_text(encoding="utf-8"))["llm"]["template"] == "qwen2.5"


def test_only_the_main_process_writes_the_model_info(tmp_path, monkeypatch):
    from erckit.config import load_config
    from erckit.models import MODEL_FILE, train

    monkeypatch.setenv("RANK", "1")  # what torchrun tells the second process, before any process group
    monkeypatch.setenv("WORLD_SIZE", "2")
    train(load_config("tfidf", [f"out={tmp_path / 'second'}", *SAMPLE_DATA]))
    assert not (tmp_path / "second" / MODEL_FILE).exists()
    monkeypatch.setenv("RANK", "0")
    train(load_config("tfidf", [f"out={tmp_path / 'first'}", *SAMPLE_DATA]))
    assert (tmp_path / "first" / MODEL_FILE).exists()
