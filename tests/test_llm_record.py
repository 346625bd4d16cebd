"""The run record: a run's settings saved beside its weights, carried by merge, read by predict and select;
explicit flags override it and say so."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from erckit.cli import main
from erckit.config import ConfigError
from erckit.data import DataError
from erckit.labels import LABELS
from erckit.llm.record import RunRecord, load_run_record, save_run_record
from erckit.llm.run import RunFlags, with_overrides
from erckit.prompts import PromptConfig
from test_llm_train import setup  # noqa: F401  (the module fixture: tiny Llama + BMELD slices)

RUN = ["llm.template=gemma", "llm.prompt.window=4", "llm.max_length=300", "llm.max_steps=4", "llm.eval_steps=4",
       "llm.lr=0.01", "llm.batch_size=8", "llm.eval_batch_size=16", "llm.lora.rank=4", "llm.lora.alpha=8"]


def probs(path) -> np.ndarray:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return np.array([[r["probs"][label] for label in LABELS] for r in rows])


@pytest.fixture(scope="module")
def run(setup, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("record") / "run"
    overrides = [f"out={out}", f"data.train={setup['train']}", f"data.validation={setup['dev']}",
                 f"llm.model={setup['base']}", *RUN]
    assert main(["train", "--config", "gemma-270m-lora", *overrides]) == 0
    return out


@pytest.mark.needs_data
def test_merge_then_predict_uses_the_runs_window_template_and_max_length(setup, run, tmp_path, capsys):  # noqa: F811
    merged = tmp_path / "merged"
    assert main(["merge", "--adapter", str(run), "--out", str(merged)]) == 0  # no --base, no --template
    record = load_run_record(merged)
    assert record == RunRecord(str(setup["base"]), "gemma", PromptConfig("zh", window=4), 300, "fp32", adapter=False,
                               eval_batch_size=16)
    checkpoint = tmp_path / "merged-checkpoint"  # the checkpoint `select` ranked first, named: the same record
    assert main(["merge", "--model", str(run / "checkpoint-4"), "--out", str(checkpoint)]) == 0
    assert load_run_record(checkpoint) == record
    assert main(["merge", "--adapter", str(run), "--out", str(checkpoint)]) == 0  # an earlier merge is replaced
    assert load_run_record(checkpoint) == record
    from_merged = tmp_path / "merged.jsonl"
    assert main(["predict", "--model", str(merged), "--input", str(setup["dev"]), "--out", str(from_merged)]) == 0
    explicit = tmp_path / "explicit.jsonl"
    args = ["predict", "--model", str(setup["base"]), "--adapter", str(run / "best"), "--input", str(setup["dev"]),
            "--template", "gemma", "--window", "4", "--max-length", "300", "--out", str(explicit)]
    assert main(args) == 0
    np.testing.assert_allclose(probs(from_merged), probs(explicit), atol=1e-4)
    capsys.readouterr()
    wider = tmp_path / "wider.jsonl"
    assert main(["predict", "--model", str(merged), "--input", str(setup["dev"]), "--window", "10",
                 "--out", str(wider)]) == 0
    assert "note: --window 10 overrides the run's 4" in capsys.readouterr().err
    assert np.abs(probs(wider) - probs(from_merged)).max() > 1e-3  # the window matters: the flag was applied


@pytest.mark.needs_data
def test_predict_window_on_a_run_is_applied_and_said(setup, run, tmp_path, capsys):  # noqa: F811
    default, narrow = tmp_path / "default.jsonl", tmp_path / "narrow.jsonl"
    assert main(["predict", "--model", str(run), "--input", str(setup["dev"]), "--out", str(default)]) == 0
    assert "overrides" not in capsys.readouterr().err
    assert main(["predict", "--model", str(run), "--input", str(setup["dev"]), "--window", "1",
                 "--out", str(narrow)]) == 0
    assert "note: --window 1 overrides the run's 4" in capsys.readouterr().err
    assert np.abs(probs(narrow) - probs(default)).max() > 1e-3


@pytest.mark.needs_data
def test_select_reads_the_record_of_its_checkpoints(setup, run, tmp_path):  # noqa: F811
    out = tmp_path / "select.json"
    assert main(["select", "--run", str(run), "--validation", str(setup["dev"]), "--out", str(out)]) == 0
    ranking = json.loads(out.read_text())["ranking"]
    info = json.loads((run / "erckit_model.json").read_text())
    assert [r["checkpoint"] for r in ranking] == [str(run / "checkpoint-4")]
    assert ranking[0]["macro_f1"] == pytest.approx(info["summary"]["best_macro_f1"], abs=1e-6)


@pytest.mark.needs_data
def test_merge_keeps_the_base_dtype(setup, tmp_path):  # noqa: F811
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "bf16-base"
    AutoModelForCausalLM.from_pretrained(setup["base"], dtype=torch.bfloat16).save_pretrained(base)
    AutoTokenizer.from_pretrained(setup["base"]).save_pretrained(base)
    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules="all-linear"))
    adapter.save_pretrained(tmp_path / "adapter")
    save_run_record(tmp_path / "adapter", RunRecord(str(base), "plain"))
    assert main(["merge", "--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "merged")]) == 0
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_tensor(k).dtype for k in weights.keys()}  # noqa: SIM118 (a safetensors handle)
    assert dtypes == {torch.bfloat16}  # not float32 on CPU


def test_overrides_change_only_what_is_given_and_say_so():
    record = RunRecord("base", "gemma", PromptConfig("zh", window=4), 300)
    same, notes = with_overrides(record, RunFlags(template="gemma", prompt={"window": 4}))
    assert same == record and notes == []
    changed, notes = with_overrides(record, RunFlags(max_length=128, prompt={"window": 6, "variant": "speaker"}))
    assert changed == RunRecord("base", "gemma", PromptConfig("zh", 6, "centered", "speaker"), 128)
    assert notes == ["--max-length 128 overrides the run's 300", "--window 6 overrides the run's 4",
                     "--variant speaker overrides the run's emotion"]
    dialogue = RunRecord("base", "gemma", PromptConfig("zh", form="dialogue"), 300)
    for flags in (RunFlags(prompt={"window": 4}), RunFlags(prompt={"window": 4, "form": "dialogue"})):
        with pytest.raises(ConfigError, match="--window 4: the window form's setting; the dialogue form reads"):
            with_overrides(dialogue if "form" not in flags.prompt else record, flags)  # it would change nothing
    assert with_overrides(dialogue, RunFlags(prompt={"window": 4, "form": "window"}))[0].prompt.window == 4


def test_a_bad_record_is_refused_naming_the_file(tmp_path):
    (tmp_path / "erckit_llm.json").write_text(json.dumps({"base_model": "x", "template": "plain", "prompt": {"window": 0}}))
    with pytest.raises(DataError, match="erckit_llm.json.*window must be at least 1"):
        load_run_record(tmp_path)
    (tmp_path / "erckit_llm.json").write_text(json.dumps({"template": "plain"}))
    with pytest.raises(DataError, match="erckit_llm.json: missing key 'base_model'$"):
        load_run_record(tmp_path)
    (tmp_path / "erckit_llm.json").write_text(json.dumps({"base_model": "x", "template": "plain", "colour": 1}))
    with pytest.raises(DataError, match="unknown key 'colour'"):
        load_run_record(tmp_path)
    for key, value, problem in [("eval_batch_size", 0, "llm.eval_batch_size must be 1 or more"),
                                ("pack_tokens", 0, "llm.pack_tokens must be 1 or more"),
                                ("max_length", -5, "llm.max_length must be at least 2"),
                                ("precision", "fp8", "llm.precision must be"),
                                ("eval_batch_size", True, "eval_batch_size: expected int, got True"),
                                ("template", " ", "template must not be empty"),
                                ("prompt", {"window": "4"}, "prompt.window: expected int, got '4'")]:
        (tmp_path / "erckit_llm.json").write_text(json.dumps({"base_model": "x", "template": "plain", key: value}))
        with pytest.raises(DataError, match=f"erckit_llm.json: {problem}"):
            load_run_record(tmp_path)


@pytest.mark.needs_data
def test_a_base_that_is_no_model_is_named_before_loading(run, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model", encoding="utf-8")
    assert main(["merge", "--adapter", str(run), "--base", str(tmp_path / "notes"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert f"the base model {tmp_path / 'notes'}: the folder holds no model (no config.json)" in err, err
    assert not (tmp_path / "m").exists()
