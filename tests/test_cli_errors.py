"""Every bad-input case gets a one-line error naming file and record, exit code 2, and no output."""

import json
import subprocess
import sys

import pytest

from conftest import SAMPLE_DATA, m3ed_file
from erckit.cli import main

GOOD = [("A", "你好", "Happy"), ("B", "嗯", "Neutral")]


def m3ed_text(dialog: dict) -> str:
    return json.dumps({"Show": {"d1": {"SpeakerInfo": {}, "Dialog": dialog}}}, ensure_ascii=False)


CSV_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"

BAD_INPUTS = {
    "malformed-json": ("annotation_train.json", '{"Show": {"d1": {"Dialog": {"u1": {"Speaker": "A", "Text": "hi"', "malformed JSON"),
    "malformed-jsonl": ("d.jsonl", '{"id": "d1", "utterances": []}\n{"id": "d2", "utter', "line 2: malformed JSON"),
    "malformed-csv": ("d.csv", CSV_HEADER + '1,"Hi,A,joy,positive,0,0\n', "fields"),
    "csv-ids-not-integers": ("d.csv", CSV_HEADER + "1,Hi,A,joy,positive,x,0\n",
                             "line 2: Dialogue_ID 'x' is not a whole number (a MELD-style CSV numbers its dialogues"),
    "csv-ids-half": ("d.csv", CSV_HEADER + "1,Hi,A,joy,positive,0,0.5\n", "line 2: Utterance_ID '0.5' is not a whole"),
    "csv-by-tabs": ("d.csv", CSV_HEADER.replace(",", "\t") + "1\tHi\tA\tjoy\tpositive\t0\t0\n",
                    ("header: missing column 'Dialogue_ID' (a MELD-style CSV has Dialogue_ID, Utterance_ID, Speaker and a "
                    "text column); its columns: Sr No.\tUtterance\t")),
    "csv-by-semicolons": ("d.csv", "Dialogue_ID;Utterance_ID;Speaker;Utterance\n0;0;A;hi\n",
                          "the fields look separated by semicolons: a CSV file separates them by commas"),
    "csv-no-speaker": ("d.csv", "Dialogue_ID,Utterance_ID,Who,Utterance\n0,0,A,hi\n",
                       ("missing column 'Speaker' (a MELD-style CSV has Dialogue_ID, Utterance_ID, Speaker and a text "
                       "column); its columns: Dialogue_ID, Utterance_ID, Who, Utterance")),
    "no-text": ("annotation_train.json", m3ed_text({"u1": {"Speaker": "A"}}), "utterance u1: has no \"Text\""),
    "blank-text": ("annotation_train.json", m3ed_text({"u1": {"Speaker": "A", "Text": "  "}}), "utterance u1: \"Text\" is blank"),
    "number-text": ("annotation_train.json", m3ed_text({"u1": {"Speaker": "A", "Text": 123}}),
                    "utterance u1: \"Text\" is int 123, not text"),
    "number-text-jsonl": ("d.jsonl", '{"id": 7, "utterances": [{"id": 1, "speaker": "A", "text": 5}]}\n',
                          "line 1, utterance 1: \"text\" is int 5, not text"),  # a number is an id, never a text
    "list-text-jsonl": ("d.jsonl", '{"id": "d1", "utterances": [{"id": "u1", "speaker": "A", "text": ["hi"]}]}\n',
                        "\"text\" is list ['hi'], not text"),
    "trailing-text": ("annotation_train.json", json.dumps({"S": {"d1": {"Dialog": {"u1": {"Speaker": "A", "Text": "hi"}}}}},
                                                          indent=1) + "\n{}\n", "line 13 column 1: malformed JSON: Extra data"),
    "empty-file": ("annotation_train.json", " \n", "annotation_train.json: is empty"),
    "unknown-label": ("annotation_train.json", m3ed_text({"u1": {"Speaker": "A", "Text": "hi", "EmoAnnotation": {"final_main_emo": "Joyous"}}}), "utterance u1: unknown label 'Joyous'"),
    "unknown-label-csv": ("d.csv", CSV_HEADER + "1,Hi,A,bliss,positive,0,0\n", "utterance dia0_utt0: unknown label 'bliss'"),
    "duplicate-id-json": ("annotation_train.json", '{"Show": {"d1": {"Dialog": {"u1": {"Speaker": "A", "Text": "a"}, "u1": {"Speaker": "B", "Text": "b"}}}}}', "key 'u1': duplicate key"),
    "duplicate-id-across-dialogues": ("annotation_train.json", '{"S": {"d1": {"Dialog": {"u1": {"Speaker": "A", "Text": "a"}}}, "d2": {"Dialog": {"u1": {"Speaker": "B", "Text": "b"}}}}}', "utterance u1: duplicate utterance id"),
    "duplicate-id-csv": ("d.csv", CSV_HEADER + "1,Hi,A,joy,positive,0,0\n2,Ho,B,joy,positive,0,0\n",
                         "line 3, utterance dia0_utt0: duplicate utterance id (line 2 has it too)"),
    "empty-speaker-csv": ("d.csv", CSV_HEADER + "1,Hi, ,joy,positive,0,0\n", "utterance dia0_utt0: empty Speaker"),
    "empty-dialogue": ("annotation_train.json", '{"Show": {"d1": {"Dialog": {}}}}', "dialogue d1: is empty"),
    "empty-dialogue-jsonl": ("d.jsonl", '{"id": "d9", "utterances": []}\n', "dialogue d9: is empty"),
}


def write_bad(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_to_prepare(case, tmp_path, capsys):
    name, content, message = BAD_INPUTS[case]
    path = write_bad(tmp_path, name, content)
    out = tmp_path / "out"
    assert main(["prepare", "--train", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err, err
    assert not out.exists()


@pytest.mark.parametrize("encoding", ["utf-16-le", "latin-1"])
def test_wrong_encoding(encoding, tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_bytes(CSV_HEADER.encode() + "1,Café au lait,A,joy,positive,0,0\n".encode(encoding))
    assert main(["prepare", "--train", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "wrong encoding" in err and str(path) in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_bad_file_among_good_ones_writes_nothing(tmp_path):
    good = m3ed_file(tmp_path / "good.json", {"d1": GOOD})
    bad = write_bad(tmp_path, "bad.json", '{"Show": {"d1": {"Dialog": {}}}}')
    out = tmp_path / "out"
    assert main(["prepare", "--train", str(good), "--test", str(bad), "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "d1_1", "label": "Happy"}', '{"id": "d1_2", "label": "Happyy"}'], "line 2 (id d1_2): unknown label 'Happyy'"),
        (['{"id": "d1_1", "label": "Happy"}', '{"id": "d1_1", "label": "Sad"}'], "line 2: duplicate id 'd1_1'"),
        (['{"id": "d1_1", "label": "unknown"}'], "line 1 (id d1_1): unknown label 'unknown'"),  # no "not yet" here
        (['{"id": "d1_1", "label": "Happy"', ], "line 1: malformed JSON"),
        (['{"label": "Happy"}'], 'line 1: has no "id"'),
        (['{"id": "d1_1", "label": "Happy"}'], "1 utterance id(s)"),
    ],
)
def test_bad_predictions_to_combine(lines, message, tmp_path, capsys):
    raw = m3ed_file(tmp_path / "annotation_test.json", {"d1": GOOD})
    preds = write_bad(tmp_path, "predictions.jsonl", "\n".join(lines) + "\n")
    out = tmp_path / "test_label.json"
    assert main(["combine", "--predictions", str(preds), "--raw", str(raw), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "predictions.jsonl" in err and message in err, err
    assert not out.exists()


def test_real_process_exit_code_and_no_traceback(tmp_path):
    path = write_bad(tmp_path, "annotation_train.json", '{"Show": {"d1": {"Dialog": {}}}}')
    result = subprocess.run(
        [sys.executable, "-m", "erckit", "prepare", "--train", str(path), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().endswith("dialogue d1: is empty")


@pytest.mark.parametrize("command", ["prepare", "combine", "evaluate"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: erckit " + command in capsys.readouterr().out


def test_predicting_with_an_unfinished_run_is_refused(tmp_path, capsys):
    from conftest import SAMPLE

    model = tmp_path / "model"
    test = SAMPLE / "annotation_test.json"
    assert main(["train", "--config", "tfidf", f"out={model}", *SAMPLE_DATA, "data.validation=null"]) == 0
    info = json.loads((model / "erckit_model.json").read_text())
    (model / "erckit_model.json").write_text(json.dumps(info | {"finished": False}))  # as a killed run leaves it
    out = tmp_path / "p.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(test), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has not finished" in err and str(model) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_tfidf_prints_and_stores_its_validation_score_and_a_reused_run_says_only_that(tmp_path, capsys):
    from conftest import SAMPLE
    from erckit.metrics import evaluate_files

    model, validation = tmp_path / "model", SAMPLE / "annotation_validation.json"
    args = ["train", "--config", "tfidf", f"out={model}", *SAMPLE_DATA]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((model / "erckit_model.json").read_text())["summary"]
    assert f"validation macro-F1 {summary['val_macro_f1']:.4f}, weighted-F1 {summary['val_weighted_f1']:.4f}" in printed
    preds = tmp_path / "dev.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(validation), "--out", str(preds)]) == 0
    assert evaluate_files(preds, validation)["macro_f1"] == summary["val_macro_f1"]
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == [f"{model} already holds this finished run; reusing it"]


def test_output_into_a_pipe_whose_reader_has_gone_ends_quietly():
    import os

    read, write = os.pipe()
    os.close(read)  # `erckit recipes ls | head -0`: nobody reads
    try:
        done = subprocess.run([sys.executable, "-m", "erckit", "recipes", "ls"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120, check=False)
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == ""


def test_a_broken_pipe_that_is_not_the_output_is_an_error(monkeypatch, capsys):
    import erckit.cli

    def worker_gone(args):
        raise BrokenPipeError(32, "Broken pipe")  # a worker process's pipe, not standard output

    monkeypatch.setattr(erckit.cli, "_recipes", worker_gone)
    assert main(["recipes", "ls"]) == 2
    assert capsys.readouterr().err == "erckit recipes: error: [Errno 32] Broken pipe\n"


def test_training_data_with_one_label_is_refused_before_anything_is_written(tmp_path, capsys):
    train = m3ed_file(tmp_path / "annotation_train.json", {"d1": [("A", "你好", "Happy"), ("B", "太好了", "Happy")]})
    out = tmp_path / "run"
    assert main(["train", "--config", "tfidf", f"out={out}", f"data.train={train}", "data.validation=null"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{train}: has only one label (Happy); training needs two or more" in err
    assert not out.exists()


@pytest.mark.parametrize("held", ["foreign", "training-run", "exported-adapter", "run-without-checkpoints"])
def test_merge_refuses_an_out_folder_it_would_destroy(held, tmp_path, capsys):
    """merge replaces --out whole: a folder of the user's, a training run, or the adapter a run exported to its
    best/ is refused before anything is loaded, and every file in it stays."""
    out = tmp_path / ("best" if held == "exported-adapter" else "models")
    out.mkdir()
    if held == "foreign":
        kept = [out / "thesis.txt"]
        message = "is a folder that is not an erckit run (no erckit_llm.json; it holds thesis.txt)"
    elif held == "training-run":
        (out / "checkpoint-4").mkdir()
        kept = [out / "erckit_llm.json", out / "checkpoint-4" / "adapter_model.safetensors"]
        message = "is a training run's folder or its exported model (it holds checkpoint-4)"
    elif held == "exported-adapter":
        (tmp_path / "erckit_model.json").write_text("{}", encoding="utf-8")  # the run around best/
        kept = [out / "erckit_llm.json", out / "config.json", out / "model.safetensors"]  # a full fine-tune's
        message = "(it holds the weights of a training run)"
    else:
        kept = [out / "erckit_llm.json", out / "erckit_model.json"]
        message = "(it holds erckit_model.json)"
    for path in kept:
        path.write_text("mine", encoding="utf-8")
    adapter = tmp_path / "run" / "best"
    assert main(["merge", "--adapter", str(adapter), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and message in err, err
    assert all(path.read_text(encoding="utf-8") == "mine" for path in kept)


@pytest.mark.parametrize(("recipe", "setting", "problem"), [
    ("bert_bigru", "encoder.name=/nonexistent/folder", "encoder.name=/nonexistent/folder: no such model folder"),
    ("bert_bigru", "encoder.name=packaged:foo", "encoder.name=packaged:foo: no such packaged model"),
    ("bert_bigru", "encoder.name=EMPTY", "the folder holds no model (no config.json)"),
    ("bert_bigru", "encoder.name=hfl/chinese-roberta-wwm-ext", "not in the Hugging Face cache while offline"),
    ("gemma-270m-lora", "llm.model=someone/missing-7b", "llm.model=someone/missing-7b: not a folder here"),
])
def test_a_model_that_cannot_be_found_is_named_before_the_run_folder_is_written(tmp_path, capsys, recipe, setting,
                                                                               problem):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    args = ["train", "--config", recipe, f"out={out}", *SAMPLE_DATA, setting.replace("EMPTY", str(tmp_path / "empty"))]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err, err
    assert not out.exists()


def test_compare_names_a_model_that_cannot_be_found_before_any_method_trains(tmp_path, capsys):
    import yaml

    config = {"out": str(tmp_path / "compare"), "train": str(SAMPLE_DATA[0].split("=", 1)[1]),
              "validation": str(SAMPLE_DATA[1].split("=", 1)[1]),
              "methods": {"tfidf": {"recipe": "tfidf"},
                          "encoder": {"recipe": "bert_bigru", "overrides": ["encoder.name=/nonexistent/folder"]}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 2
    assert "encoder.name=/nonexistent/folder: no such model folder" in capsys.readouterr().err
    assert not (tmp_path / "compare" / "tfidf").exists()  # the first method was not trained


@pytest.mark.parametrize(("raw", "message"), [
    ('{"id": "d1", "utterances": [{"id": "u1", "speaker": "A", "text": "hi"}]}\n'.encode("utf-16"),
     "d.jsonl: is UTF-16 text: save it as UTF-8 (or GBK)"),
    ((CSV_HEADER + "1,,A,joy,positive,0,0\n").encode(), "line 2, utterance dia0_utt0: empty Utterance"),
    (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xb5U\x9a", ("d.csv: is a zip archive (a spreadsheet workbook?), "
     "not text: save the sheet as CSV (UTF-8)")),
])
def test_an_encoding_or_an_empty_cell_is_named_in_words_a_user_acts_on(tmp_path, capsys, raw, message):
    path = tmp_path / ("d.jsonl" if raw.startswith(b"\xff\xfe") else "d.csv")
    path.write_bytes(raw)
    assert main(["prepare", "--train", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(("setting", "problem"), [
    ("llm.precision=fp16", "llm.precision=fp16 needs a GPU; use fp32 (or auto) on CPU"),
    ("llm.finetuning=qlora", "llm.finetuning=qlora needs a CUDA GPU and bitsandbytes; use lora on CPU"),
    ("llm.deepspeed=zero2", "llm.deepspeed=zero2 needs the deepspeed package"),
])
def test_what_this_machine_cannot_run_is_refused_before_the_run_folder_is_written(tmp_path, capsys, setting, problem):
    import importlib.util

    import torch

    from llm_tiny import save_tiny, tiny_model, tiny_tokenizer

    if torch.cuda.is_available() or (setting.startswith("llm.deepspeed") and importlib.util.find_spec("deepspeed")):
        pytest.skip("this machine can run it")
    base = save_tiny(tmp_path / "base", tiny_model(tiny_tokenizer()), tiny_tokenizer())
    capsys.readouterr()  # transformers' bar of the test's own model save
    out = tmp_path / "run"
    assert main(["train", "--config", "gemma-270m-dialogue", f"out={out}", *SAMPLE_DATA, f"llm.model={base}",
                 setting]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err, err
    assert not out.exists()


@pytest.mark.parametrize(("device", "problem"), [("foo", "--device foo: not a device (cpu, cuda, cuda:N or auto)"),
                                                 ("cuda:0", "--device cuda:0: this machine has no CUDA GPU")])
def test_a_device_that_is_not_there_is_refused_before_anything_is_written(tmp_path, capsys, device, problem):
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out" / "p.jsonl"
    args = ["predict", "--model", str(tmp_path / "llm"), "--input", SAMPLE_DATA[0].split("=", 1)[1], "--out", str(out),
            "--device", device]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err, err
    assert not (tmp_path / "out").exists()
