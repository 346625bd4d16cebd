"""A received model folder is data, not code: its own Python code (auto_map, or a record asking for
trust_remote_code) runs under no command and no API call unless the user passes --trust-remote-code."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import yaml

import erckit
from conftest import SAMPLE
from erckit.cli import main
from erckit.data import DataError

GOLD = SAMPLE / "annotation_validation.json"
AUTO_MAP = {"AutoConfig": "payload.PayloadConfig", "AutoModel": "payload.PayloadModel",
            "AutoModelForCausalLM": "payload.PayloadModel", "AutoTokenizer": ["payload.PayloadTokenizer", None]}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def payload(folder: Path, marker: Path, *, auto_map: bool = True) -> Path:
    """A model folder whose config.json names payload.py, which writes `marker` when imported."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "payload.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    write_json(folder / "config.json", {"model_type": "payload_model", "architectures": ["PayloadModel"]}
               | ({"auto_map": AUTO_MAP} if auto_map else {}))
    return folder


def record(folder: Path, base: str, *, adapter: bool, trust: bool = False) -> None:
    write_json(folder / "erckit_llm.json", {"base_model": base, "template": "plain", "adapter": adapter,
                                            "trust_remote_code": trust})


def encoder_run(tmp: Path, marker: Path) -> Path:
    """A received bert_bigru run whose saved encoder names code (and whose recipe asks for it)."""
    run = tmp / "encoder_run"
    payload(run / "encoder", marker)
    write_json(run / "erckit_model.json", {"type": "bert_bigru", "finished": True, "summary": {}, "config": {
        "model": "bert_bigru", "out": str(run), "encoder": {"trust_remote_code": True}}})
    return run


def llm_run(tmp: Path, marker: Path) -> Path:
    """A received erckit LLM run: best/ holds a full model naming code, with its record."""
    run = tmp / "llm_run"
    payload(run / "best", marker)
    record(run / "best", "packaged:gemma-3-270m", adapter=False)
    write_json(run / "erckit_model.json", {"type": "llm", "finished": True, "summary": {},
                                           "config": {"model": "llm", "out": str(run)}})
    return run


def adapter(tmp: Path, marker: Path) -> Path:
    """A LoRA adapter (with its record) on a local base model that names code."""
    base = payload(tmp / "base", marker)
    folder = tmp / "adapter"
    write_json(folder / "adapter_config.json", {"peft_type": "LORA", "base_model_name_or_path": str(base)})
    record(folder, str(base), adapter=True)
    return folder


def merged(tmp: Path, marker: Path) -> Path:
    """A merged folder (erckit merge) naming code."""
    folder = payload(tmp / "merged", marker)
    record(folder, "packaged:gemma-3-270m", adapter=False)
    return folder


def record_only(tmp: Path, marker: Path) -> Path:
    """A merged folder with no auto_map whose record asks for trust_remote_code."""
    folder = payload(tmp / "asks", marker, auto_map=False)
    record(folder, "packaged:gemma-3-270m", adapter=False, trust=True)
    return folder


def predict(folder: Path, tmp: Path) -> list[str]:
    return ["predict", "--model", str(folder), "--input", str(GOLD), "--out", str(tmp / "p.jsonl")]


def compare(folder: Path, tmp: Path) -> list[str]:
    config = {"out": str(tmp / "c"), "train": str(SAMPLE / "annotation_train.json"), "validation": str(GOLD),
              "methods": {"given": {"model": str(folder)}}}
    (tmp / "compare.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return ["compare", "--config", str(tmp / "compare.yaml")]


def api(folder: Path, trust: bool) -> None:
    erckit.load(folder, trust_remote_code=trust)


CASES = {  # name: (folder builder, command given the folder and tmp_path; None: the Python API)
    "predict encoder run": (encoder_run, predict),
    "calibrate encoder run": (encoder_run, lambda f, t: ["calibrate", "--model", str(f), "--gold", str(GOLD)]),
    "compare model: method": (encoder_run, compare),
    "serve encoder run": (encoder_run, lambda f, t: ["serve", "--model", str(f), "--port", "0"]),
    "API encoder run": (encoder_run, None),
    "ensemble models": (encoder_run, lambda f, t: ["ensemble", "--models", str(f), str(f), "--weights", "1", "1",
                                                   "--out", str(t / "m")]),
    "predict llm run": (llm_run, predict),
    "calibrate llm run": (llm_run, lambda f, t: ["calibrate", "--model", str(f), "--gold", str(GOLD)]),
    "API llm run": (llm_run, None),
    "predict adapter": (adapter, predict),
    "select adapter": (adapter, lambda f, t: ["select", "--model", str(f), "--gold", str(GOLD)]),
    "merge adapter": (adapter, lambda f, t: ["merge", "--model", str(f), "--out", str(t / "m")]),
    "predict merged": (merged, predict),
    "select merged": (merged, lambda f, t: ["select", "--model", str(f), "--gold", str(GOLD)]),
    "predict record asks": (record_only, predict),
}


@pytest.mark.parametrize("case", CASES)
def test_a_received_folders_code_is_refused_without_the_flag(case, tmp_path, capsys):
    build, command = CASES[case]
    marker = tmp_path / "payload_ran"
    folder = build(tmp_path, marker)
    if command is None:
        with pytest.raises(DataError) as refused:
            api(folder, trust=False)
        message = str(refused.value)
        assert "trust_remote_code=True" in message
    else:
        assert main(command(folder, tmp_path)) == 2
        message = capsys.readouterr().err.strip()
        assert len(message.splitlines()) == 1 and "--trust-remote-code" in message
    assert str(folder) in message or str(tmp_path / "base") in message  # the folder, or the base its adapter names
    assert not marker.exists()  # nothing of the folder was imported
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "m").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("case", ["predict merged", "predict encoder run", "API llm run"])
def test_with_the_flag_the_check_lets_it_through(case, tmp_path, capsys):
    build, command = CASES[case]
    marker = tmp_path / "payload_ran"
    folder = build(tmp_path, marker)
    with contextlib.suppress(Exception):  # the tiny fake fails to load further on
        if command is None:
            api(folder, trust=True)
        else:
            main([*command(folder, tmp_path), "--trust-remote-code"])
    assert "a received folder's code runs only with" not in capsys.readouterr().err
    assert marker.exists()  # the user's word reached the loader


def test_a_folder_without_code_is_not_refused(tmp_path, capsys):
    folder = payload(tmp_path / "plain", tmp_path / "payload_ran", auto_map=False)
    record(folder, "packaged:gemma-3-270m", adapter=False)
    with contextlib.suppress(Exception):
        main(predict(folder, tmp_path))
    assert "--trust-remote-code" not in capsys.readouterr().err


@pytest.mark.parametrize("where", ["config.json", "best/tokenizer_config.json", "model.safetensors"])
def test_a_fifo_in_a_received_folder_is_refused_before_a_library_opens_it(where, tmp_path, capsys):
    """transformers would wait forever on a FIFO among a model folder's files: refused first, also when trusted."""
    import os

    folder = tmp_path / "received"
    (folder / "best").mkdir(parents=True)
    if where != "config.json":
        (folder / "config.json").write_text("{}")
    os.mkfifo(folder / where)
    out = tmp_path / "p.jsonl"
    for trust in ([], ["--trust-remote-code"]):
        code = main(["predict", "--model", str(folder), "--input", str(SAMPLE / "annotation_test.json"),
                     "--out", str(out), "--template", "plain", *trust])
        err = capsys.readouterr().err
        assert code == 2 and "is not a regular file" in err and where.split("/")[-1] in err, err
        assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_fusion_recipe_whose_member_carries_code_is_refused_before_anything_is_written(tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    member = encoder_run(tmp_path, marker)
    recipe = tmp_path / "fusion.yaml"
    recipe.write_text(yaml.safe_dump({"model": "fusion", "fusion": {"members": [str(member), str(member)],
                                                                    "weights": [1, 1]}}), encoding="utf-8")
    out = tmp_path / "fused"
    assert main(["train", "--config", str(recipe), "--out", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and str(member) in message and "--trust-remote-code" in message
    assert not out.exists() and not marker.exists()


def test_an_auto_map_for_a_class_transformers_has_is_not_refused(tmp_path):
    """Phi-3 folders keep an auto_map from before transformers had the model: without the flag transformers
    loads its own class and runs none of the folder's code, so such a folder is not refused."""
    from erckit.remote_code import own_code

    folder = tmp_path / "phi3"
    folder.mkdir()
    write_json(folder / "config.json", {"model_type": "phi3", "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config"}})
    write_json(folder / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizerFast",
                                                  "auto_map": {"AutoTokenizer": ["tokenization.X", None]}})
    assert own_code(folder) is None
    write_json(folder / "tokenizer_config.json", {"tokenizer_class": "PayloadTokenizer",
                                                  "auto_map": {"AutoTokenizer": ["tokenization.X", None]}})
    assert "tokenizer_config.json names Python code" in own_code(folder)


def test_a_fusion_folder_whose_member_carries_code_is_refused_by_compare_before_anything_runs(tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    member = encoder_run(tmp_path, marker)
    fusion = tmp_path / "fusion"
    fusion.mkdir()
    write_json(fusion / "erckit_model.json", {"type": "fusion", "finished": True, "summary": {"weights": [0.5, 0.5]},
                                              "config": {"model": "fusion", "fusion": {"members": [str(member)] * 2}}})
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump({"out": str(tmp_path / "c"), "train": str(SAMPLE / "annotation_train.json"),
                                      "validation": str(GOLD), "methods": {"first": {"recipe": "tfidf"},
                                                                           "fused": {"model": str(fusion)}}}))
    assert main(["compare", "--config", str(config)]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and f"its member {member}" in message
    assert not (tmp_path / "c" / "first").exists() and not marker.exists()  # refused before the first method trained


@pytest.mark.parametrize("kind", [["fusion"], {"name": "fusion"}, 7, None])
def test_a_model_record_naming_no_kind_is_looked_through_without_a_crash(kind, tmp_path):
    from erckit import kinds
    from erckit.remote_code import own_code

    folder = tmp_path / "odd"
    folder.mkdir()
    write_json(folder / "erckit_model.json", {"type": kind, "config": {"fusion": {"members": ["elsewhere"]}}})
    assert kinds.members(folder, json.loads((folder / "erckit_model.json").read_text())) == []
    assert own_code(folder) is None  # no members to look into, and no code in the folder itself
