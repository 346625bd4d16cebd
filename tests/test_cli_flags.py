"""Flags are checked like recipe values: a flag that does not apply to the model kind is refused, a value the
recipe would refuse is refused on the command line, a mistyped model path is named as such; one line, exit 2."""

from __future__ import annotations

import pytest

from conftest import SAMPLE
from erckit.cli import main

GOLD = SAMPLE / "annotation_validation.json"


def one_line(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


@pytest.fixture(scope="module")
def tfidf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tfidf") / "run"
    assert main(["train", "--config", "tfidf", f"out={out}", f"data.train={SAMPLE / 'annotation_train.json'}"]) == 0
    return out


@pytest.mark.parametrize("flags", [
    ["--batch-size", "4"], ["--backend", "generate"], ["--template", "plain"], ["--window", "3"],
    ["--form", "dialogue"], ["--dtype", "fp32"], ["--max-length", "64"], ["--max-new-tokens", "4"],
    ["--decoding", "reference"], ["--device", "cpu"], ["--tensor-parallel-size", "2"], ["--adapter", "x"],
    ["--best-so-far"],
])
def test_a_flag_that_does_not_apply_to_the_kind_is_refused(flags, tfidf_run, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert main(["predict", "--model", str(tfidf_run), "--input", str(GOLD), "--out", str(out), *flags]) == 2
    error = one_line(capsys)
    assert flags[0] in error and "tfidf" in error
    assert not out.exists()


def test_the_flags_of_the_kind_are_accepted(tfidf_run, tmp_path):
    # the flags every kind reads: the input's format and text column, and the model's own code (no own code here)
    flags = ["--format", "m3ed", "--trust-remote-code"]
    assert main(["predict", "--model", str(tfidf_run), "--input", str(GOLD), "--out", str(tmp_path / "p.jsonl"),
                 *flags]) == 0
    csv = tmp_path / "dialogue.csv"
    csv.write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance,Line\n0,0,A,hi,你好\n0,1,B,why,为什么\n", encoding="utf-8")
    assert main(["predict", "--model", str(tfidf_run), "--input", str(csv), "--out", str(tmp_path / "c.jsonl"),
                 "--text-column", "Line"]) == 0


PREDICT = ["predict", "--model", "packaged:gemma-3-270m", "--template", "plain", "--input", str(GOLD)]


@pytest.mark.parametrize(("backend", "flags"), [
    ("score", ["--max-new-tokens", "4"]), ("score", ["--decoding", "reference"]), ("vllm", ["--unparsed", "score"]),
    ("generate", ["--tensor-parallel-size", "2"]), ("score", ["--gpu-memory-utilization", "0.5"]),
    ("generate", ["--max-num-batched-tokens", "512"]),
])
def test_a_flag_that_does_not_apply_to_the_backend_is_refused(backend, flags, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert main([*PREDICT, "--out", str(out), "--backend", backend, *flags]) == 2
    error = one_line(capsys)
    assert flags[0] in error and f"--backend {backend}" in error
    assert not out.exists()


@pytest.mark.parametrize(("flags", "problem"), [
    (["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
    (["--gpu-memory-utilization", "1.5"], "gpu_memory_utilization must be in (0, 1]"),
    (["--tensor-parallel-size", "0"], "tensor_parallel_size must be at least 1"),
    (["--max-num-batched-tokens", "-5"], "max_num_batched_tokens must be at least 1"),
])
def test_an_engine_flag_value_its_declaration_refuses_is_refused(flags, problem, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    backend = "vllm-generate"  # every one of these flags applies to it
    assert main([*PREDICT, "--out", str(out), "--backend", backend, *flags]) == 2
    error = one_line(capsys)
    assert f"{flags[0]} {flags[1]}: {problem}" in error and not out.exists()


def test_the_llm_flags_of_predict_are_derived_from_one_declaration():
    from dataclasses import fields

    from erckit.cli import build_parser
    from erckit.flags import flag
    from erckit.llm.settings import PredictSettings

    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    actions = {a.option_strings[0]: a for a in predict._actions if a.option_strings}
    for item in fields(PredictSettings):
        action = actions[flag(item.name)]
        assert action.default is None and action.choices == item.metadata["choices"]
        assert action.help.startswith(item.metadata["help"])


SELECT = ["select", "--model", "nowhere", "--gold", str(GOLD)]
PREPARE = ["prepare", "--train", str(GOLD)]


@pytest.mark.parametrize(("command", "flags", "key"), [
    (PREPARE, ["--window", "0"], "llm.prompt.window"),
    (PREPARE, ["--window", "-3"], "llm.prompt.window"),
    (PREPARE, ["--same-speaker", "-1"], "llm.prompt.same_speaker"),
    (PREPARE, ["--same-speaker", "3", "--form", "dialogue"], "window form only"),  # as the recipe refuses it
    (PREPARE, ["--seed", "-1"], "train.seed"),
    (PREPARE, ["--question", "quoted"], "question"),
    (PREDICT, ["--window", "0"], "llm.prompt.window"),
    (PREDICT, ["--max-length", "1"], "llm.max_length"),
    (PREDICT, ["--batch-size", "0"], "llm.eval_batch_size"),
    (PREDICT, ["--batch-size", "-2"], "llm.eval_batch_size"),
    (SELECT, ["--window", "-1"], "llm.prompt.window"),
    (SELECT, ["--max-length", "0"], "llm.max_length"),
    (SELECT, ["--batch-size", "0"], "llm.eval_batch_size"),
    (SELECT, ["--limit", "-1"], "llm.eval_subset"),
])
def test_a_flag_value_the_recipe_would_refuse_is_refused(command, flags, key, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*command, "--out", str(out), *flags]) == 2
    error = one_line(capsys)
    assert error.split(": error: ")[1].startswith(f"{flags[0]} {flags[1]}: ") and key in error, error
    assert not out.exists()


@pytest.mark.parametrize("model", ["./nope", "../nope", "{tmp}/nope", "runs/nope", "a/b/c"])
def test_a_mistyped_model_path_is_named_as_no_such_folder(model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    model = model.format(tmp=tmp_path)
    assert main(["predict", "--model", model, "--input", str(GOLD), "--out", str(tmp_path / "p.jsonl")]) == 2
    error = one_line(capsys)
    assert error.endswith(f"{model}: no such model folder"), error


@pytest.mark.parametrize("command", [
    ["calibrate", "--gold", str(GOLD), "--model"], ["serve", "--model"], ["select", "--gold", str(GOLD), "--model"],
    ["merge", "--out", "merged", "--model"],
])
def test_every_command_names_a_mistyped_model_folder(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "./nope"]) == 2
    assert one_line(capsys).endswith("nope: no such model folder")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-7B-Instruct", "nope"])
def test_a_hub_id_without_a_local_folder_keeps_its_advice(model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["predict", "--model", model, "--input", str(GOLD), "--out", str(tmp_path / "p.jsonl")]
    assert main(args) == 2
    assert one_line(capsys).endswith(f"{model}: no such model folder here; as a hub id it needs its chat template: --template")


def test_a_file_given_as_the_model_is_named(tmp_path, capsys):
    args = ["predict", "--model", str(GOLD), "--input", str(GOLD), "--out", str(tmp_path / "p.jsonl")]  # swapped
    assert main(args) == 2
    assert one_line(capsys).endswith(f"{GOLD}: is a file, not a model folder")
    assert not (tmp_path / "p.jsonl").exists()


def test_a_folder_holding_no_model_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ["predict", "--model", str(tmp_path / "empty"), "--input", str(GOLD), "--out", str(tmp_path / "p.jsonl")]
    assert main(args) == 2
    assert one_line(capsys).endswith("empty: holds no model (no erckit_model.json, erckit_llm.json, config.json or adapter_config.json)")
    assert not (tmp_path / "p.jsonl").exists()


def test_best_so_far_for_a_kind_without_it_is_refused_by_the_api_and_serve_too(tfidf_run, capsys):
    import erckit
    from erckit.config import ConfigError

    with pytest.raises(ConfigError, match="only bert_bigru runs"):
        erckit.load(tfidf_run, best_so_far=True)
    assert main(["serve", "--model", str(tfidf_run), "--best-so-far", "--port", "0"]) == 2
    assert "only bert_bigru runs" in one_line(capsys)


@pytest.mark.parametrize("command", [
    ["select", "--gold", str(GOLD), "--model", "{full}", "--base", "packaged:gemma-3-270m"],
    ["merge", "--model", "{full}", "--base", "packaged:gemma-3-270m", "--out", "{tmp}/merged"],
    ["predict", "--model", "packaged:gemma-3-270m", "--adapter", "{full}", "--input", str(GOLD), "--out", "{tmp}/p.jsonl"],
])
def test_a_base_model_for_a_folder_that_is_no_adapter_is_refused(command, tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (full / "erckit_llm.json").write_text('{"base_model": "packaged:gemma-3-270m", "template": "plain", "adapter": false}',
                                          encoding="utf-8")
    assert main([part.format(full=full, tmp=tmp_path) for part in command]) == 2
    error = one_line(capsys)
    assert f"{full}: is not a LoRA adapter" in error and "--base" in error
    assert not (tmp_path / "merged").exists() and not (tmp_path / "p.jsonl").exists()


def test_every_flag_checked_as_a_recipe_key_names_a_field_of_a_recipe_section():
    import dataclasses
    import typing

    from erckit.config import RunConfig
    from erckit.flags import RECIPE_KEYS

    for key in RECIPE_KEYS.values():
        *path, name = key.split(".")
        section = RunConfig
        for part in path:
            section = typing.get_type_hints(section)[part]
        assert name in {f.name for f in dataclasses.fields(section)}, key
