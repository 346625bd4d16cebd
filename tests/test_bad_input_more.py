"""More bad input to predictions, ensemble, combine (LLaMA-Factory), select and predict: one-line error, exit 2, no output."""

import json

import pytest

from conftest import SAMPLE, m3ed_file
from erckit.cli import main
from erckit.labels import LABELS
from erckit.predictions import Prediction, read_llamafactory, read_predictions, write_predictions

GOOD = [("A", "你好", "Happy"), ("B", "嗯", "Neutral")]
IDS = ["d1_1", "d1_2"]


def probs(**changes) -> dict:
    """Valid probs (Happy 0.4, the others 0.1) with some values replaced; a value of ... drops the label."""
    values = {label: 0.4 if label == "Happy" else 0.1 for label in LABELS} | changes
    return {k: v for k, v in values.items() if v is not ...}


def write_lines(path, records: list[dict]):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def good_run(path):
    write_predictions(path, [Prediction(i, "Happy", probs()) for i in IDS])
    return path


def assert_error(capsys, *parts: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (probs(Disgust=None), '"probs" of Disgust is null'),
        (probs(Happy="0.4"), '"probs" of Happy is "0.4"'),
        (probs(Fear=-0.1), '"probs" of Fear is -0.1'),
        (probs(Fear=float("nan")), '"probs" of Fear is NaN'),
        (probs(Sad=True), '"probs" of Sad is true'),
        (probs(Sad=...), '"probs" lacks Sad'),
        (probs(Joy=0.1), '"probs" has unknown label(s) Joy'),
        ([0.1] * 7, '"probs" must be an object'),
    ],
)
def test_bad_probs_name_file_and_line(bad, message, tmp_path, capsys):
    first = good_run(tmp_path / "a.jsonl")
    second = write_lines(tmp_path / "b.jsonl", [{"id": "d1_1", "label": "Happy", "probs": probs()},
                                                {"id": "d1_2", "label": "Happy", "probs": bad}])
    out = tmp_path / "out.jsonl"
    assert main(["ensemble", "--predictions", str(first), str(second), "--out", str(out)]) == 2
    assert_error(capsys, str(second), "line 2 (id d1_2)", message)
    assert not out.exists()


@pytest.mark.parametrize(("record", "message"), [({"id": "d1_2"}, 'has no "label"'),
                                                 ({"id": "d1_2", "label": None}, 'has no "label"'),
                                                 ({"id": "d1_2", "label": 3}, "unknown label 3 (expected one of Disgust, Anger")])
def test_a_prediction_without_a_label_says_so(record, message, tmp_path, capsys):
    first = good_run(tmp_path / "a.jsonl")
    second = write_lines(tmp_path / "b.jsonl", [{"id": "d1_1", "label": "Happy"}, record])
    out = tmp_path / "out.jsonl"
    assert main(["ensemble", "--predictions", str(first), str(second), "--out", str(out)]) == 2
    assert_error(capsys, str(second), "line 2 (id d1_2)", message)
    assert not out.exists()


def test_non_utf8_predictions_name_the_file(tmp_path, capsys):
    raw = m3ed_file(tmp_path / "annotation_test.json", {"d1": GOOD})
    preds = tmp_path / "predictions.jsonl"
    preds.write_bytes('{"id": "d1_1", "label": "Happy", "raw": "Café"}\n'.encode("latin-1"))
    out = tmp_path / "test_label.json"
    assert main(["combine", "--predictions", str(preds), "--raw", str(raw), "--out", str(out)]) == 2
    assert_error(capsys, str(preds), "line 1", "wrong encoding")
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ('{"offsets": ', "line 1: malformed JSON"),
        ('{"offsets": {"Happy": 1.0}}', "offsets: lacks Disgust"),
        (json.dumps({"offsets": probs(Anger="x")}), "offsets: Anger is \"x\", not a number"),
        (json.dumps({"offsets": probs(Joy=1.0)}), "offsets: unknown label(s) Joy"),
        ("[1, 2]", 'expected an object with "offsets"'),
    ],
)
def test_bad_offsets_to_ensemble(content, message, tmp_path, capsys):
    runs = [str(good_run(tmp_path / "a.jsonl")), str(good_run(tmp_path / "b.jsonl"))]
    offsets = tmp_path / "calibration.json"
    if content is not None:
        offsets.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["ensemble", "--predictions", *runs, "--offsets", str(offsets), "--out", str(out)]) == 2
    assert_error(capsys, str(offsets), message)
    assert not out.exists()


def test_ensemble_needs_two_runs(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["ensemble", "--predictions", str(good_run(tmp_path / "a.jsonl")), "--out", str(out)]) == 2
    assert_error(capsys, "two or more --predictions")
    assert not out.exists()


def test_ensemble_refuses_negative_weights(tmp_path, capsys):
    runs = [str(good_run(tmp_path / "a.jsonl")), str(good_run(tmp_path / "b.jsonl"))]
    out = tmp_path / "out.jsonl"
    assert main(["ensemble", "--predictions", *runs, "--weights", "1", "-1", "--out", str(out)]) == 2
    assert_error(capsys, "--weights", "finite positive")
    assert not out.exists()


def prepared_records() -> list[dict]:
    return [{"id": i, "instruction": f"Q {i}", "input": "", "output": ""} for i in IDS]


@pytest.mark.parametrize(
    ("prepared", "generated", "bad", "message"),
    [
        (prepared_records(), None, "generated", "no such file"),
        ([prepared_records()[0], {"id": "d1_2", "input": ""}], "ok", "prepared", 'record 2: expected an object with an "instruction"'),
        ([prepared_records()[0], {"instruction": "Q"}], "ok", "prepared", 'record 2: has no "id"'),
        ([prepared_records()[0]] * 2, "ok", "prepared", "record 2: duplicate id 'd1_1'"),
        ({"d1_1": prepared_records()[0]}, "ok", "prepared", "expected a JSON list"),
        ([], "ok", "prepared", "holds nothing to predict"),
        (None, "ok", "prepared", "cannot read"),
    ],
)
def test_bad_llamafactory_inputs_to_combine(prepared, generated, bad, message, tmp_path, capsys):
    raw = m3ed_file(tmp_path / "annotation_test.json", {"d1": GOOD})
    paths = {"prepared": tmp_path / "data_test.json", "generated": tmp_path / "generated_predictions.jsonl"}
    if prepared is not None:
        paths["prepared"].write_text(json.dumps(prepared), encoding="utf-8")
    if generated is not None:
        write_lines(paths["generated"], [{"prompt": f"Q {i}", "predict": "Happy"} for i in IDS])
    out = tmp_path / "test_label.json"
    args = ["combine", "--prepared", str(paths["prepared"]), "--predictions", str(paths["generated"])]
    assert main([*args, "--raw", str(raw), "--out", str(out)]) == 2
    assert_error(capsys, str(paths[bad]), message)
    assert not out.exists()


def test_text_with_line_separators_round_trips(tmp_path):
    text = "first\u2028second\x85third"
    preds = tmp_path / "predictions.jsonl"
    write_predictions(preds, [Prediction("d1_1", "Happy", probs(), raw=text), Prediction("d1_2", "Sad", raw="Sad")])
    back = read_predictions(preds)
    assert list(back) == IDS and back["d1_1"].raw == text and back["d1_1"].probs == probs()
    prepared = tmp_path / "data_test.json"
    prepared.write_text(json.dumps([{"id": i, "instruction": f"Q {i}\u2028"} for i in IDS], ensure_ascii=False),
                        encoding="utf-8")
    generated = write_lines(tmp_path / "generated.jsonl",
                            [{"prompt": f"Q {i}\u2028", "predict": f"Happy\u2028{text}"} for i in IDS])
    assert {k: p.raw for k, p in read_llamafactory(generated, prepared).items()} == {i: f"Happy\u2028{text}" for i in IDS}


def test_select_adapter_checkpoints_need_base(tmp_path, capsys):
    checkpoint = tmp_path / "run" / "checkpoint-10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    out = tmp_path / "ranking.json"
    args = ["select", "--run", str(tmp_path / "run"), "--validation", str(SAMPLE / "annotation_validation.json")]
    assert main([*args, "--out", str(out)]) == 2
    assert_error(capsys, str(checkpoint), "LoRA adapter", "give --base")
    assert not out.exists()


def test_select_refuses_an_unlabelled_validation_file_before_scoring(tmp_path, capsys):
    checkpoint = tmp_path / "run" / "checkpoint-10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text('{"id": "d1", "utterances": [{"id": "u1", "speaker": "A", "text": "你好"}]}\n', encoding="utf-8")
    assert main(["select", "--run", str(tmp_path / "run"), "--validation", str(unlabelled)]) == 2
    assert_error(capsys, f"{unlabelled}: holds no labels: a labelled file is needed here")


def test_predict_with_a_missing_model_is_a_one_line_error(tmp_path, capsys):
    model, out = tmp_path / "nonexistent", tmp_path / "predictions.jsonl"
    args = ["predict", "--model", str(model), "--template", "plain", "--input", str(SAMPLE / "annotation_test.json")]
    assert main([*args, "--out", str(out)]) == 2
    assert_error(capsys, "erckit predict: error:", "nonexistent")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_training_on_a_csv_without_its_label_column_names_the_missing_labels(tmp_path, capsys):
    """A CSV with no Emotion column: the file holds no labels, said as such (not one utterance's missing label)."""
    train = tmp_path / "train.csv"
    train.write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance\n0,0,A,hi\n0,1,B,hello\n", encoding="utf-8")
    assert main(["train", "--config", "tfidf", f"data.train={train}", f"--out={tmp_path / 'm'}"]) == 2
    assert_error(capsys, f"{train}: holds no labels: a labelled file is needed here (the Emotion column of a CSV")
    assert not (tmp_path / "m").exists()
