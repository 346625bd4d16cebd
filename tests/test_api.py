"""The Python API: the README's example as written, and each input form against `erckit predict`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import erckit
from conftest import BMELD, REFERENCE_DIALOGUE, REPO, SAMPLE, SAMPLE_DATA, m3ed_file
from erckit.cli import main
from erckit.data import DataError
from readme_example import python_example


def test_the_readme_example_runs_as_written(tmp_path):
    (tmp_path / "examples").symlink_to(REPO / "examples")  # it runs from the checkout's root
    result = subprocess.run([sys.executable, "-c", python_example()], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    labelled = [line.split() for line in lines if line.startswith("1_")]
    assert [fields[0] for fields in labelled] == ["1_1", "1_2"]
    assert all(fields[1] in erckit.LABELS and 0 < float(fields[2]) <= 1 for fields in labelled)
    assert lines[-3].split() == ["Speaker", "Utterance", "label", "Anger"]
    for line, speaker in zip(lines[-2:], ("Ross", "Rachel"), strict=True):
        assert line.split()[0] == speaker and line.split()[-2] in erckit.LABELS and 0 < float(line.split()[-1]) < 1
    assert json.loads((tmp_path / "runs" / "python_example" / "erckit_model.json").read_text())["finished"]


def test_the_public_names_are_exported_and_documented():
    import pydoc

    assert set(erckit.__all__) <= set(dir(erckit))  # imported on first use, yet listed by dir() and help()
    assert "load(folder" in pydoc.render_doc(erckit, renderer=pydoc.plaintext)
    for name in erckit.__all__:
        value = getattr(erckit, name)
        assert name == "__version__" or name == "LABELS" or value.__doc__, name


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> erckit.Model:
    folder = tmp_path_factory.mktemp("api") / "model"
    assert main(["train", "--config", "tfidf", "--out", str(folder), *SAMPLE_DATA]) == 0
    return erckit.load(folder)


def predicted(folder, path, tmp_path) -> list[dict]:
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(folder), "--input", str(path), "--out", str(out)]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_lists_dicts_and_files_label_as_erckit_predict(model, tmp_path):
    source = m3ed_file(tmp_path / "d.json", {"d": [(s, t, None) for s, t in REFERENCE_DIALOGUE]})
    expected = predicted(model.predictor.folder, source, tmp_path)
    as_pairs = model.label([REFERENCE_DIALOGUE])
    as_dicts = model.label({"d": [{"speaker": s, "text": t} for s, t in REFERENCE_DIALOGUE]})
    from_file = model.label(source)
    assert [p.id for p in as_pairs] == [f"1_{i}" for i in range(1, 12)]
    assert [p.id for p in as_dicts] == [p.id for p in from_file] == [e["id"] for e in expected]
    for predictions in (as_pairs, as_dicts, from_file):
        assert [(p.label, p.probs) for p in predictions] == [(e["label"], e["probs"]) for e in expected]
    probs = model.probabilities([REFERENCE_DIALOGUE])
    assert probs.shape == (11, 7) and np.allclose(probs.sum(1), 1)
    assert model.kind == "tfidf"


def test_past_only_labels_equal_the_last_turn_of_each_prefix(model):
    live = model.label_past_only(REFERENCE_DIALOGUE)
    assert [p.id for p in live] == [f"1_{k}" for k in range(1, len(REFERENCE_DIALOGUE) + 1)]
    for k in range(1, len(REFERENCE_DIALOGUE) + 1):
        last = model.label([REFERENCE_DIALOGUE[:k]])[-1]
        assert (live[k - 1].label, live[k - 1].probs) == (last.label, last.probs)


@pytest.mark.needs_data
def test_a_meld_dataframe_labels_as_the_csv_file(model, tmp_path):
    frame = pd.read_csv(BMELD / "dev_sent_emo.csv", encoding="gbk").iloc[:60]
    frame.to_csv(tmp_path / "slice.csv", index=False)
    expected = {e["id"]: e for e in predicted(model.predictor.folder, tmp_path / "slice.csv", tmp_path)}
    labelled = model.label_frame(frame)
    assert [(p.id, p.label) for p in model.label(frame)] == [(e["id"], e["label"]) for e in expected.values()]
    assert len(labelled) == 60 and list(labelled.columns[: len(frame.columns)]) == list(frame.columns)
    for row in labelled.itertuples(index=False):
        want = expected[f"dia{row.Dialogue_ID}_utt{row.Utterance_ID}"]
        assert row.label == want["label"]
        assert [getattr(row, label) for label in erckit.LABELS] == [want["probs"][label] for label in erckit.LABELS]
    with pytest.raises(DataError, match="has a column 'label' already: label_frame adds label"):
        model.label_frame(labelled[frame.columns.tolist() + ["label"]])  # never overwritten


@pytest.mark.parametrize("data, problem", [
    ([[("A",)]], "expected a mapping or a (speaker, text) pair"),
    ([[{"speaker": "A", "txt": "hi"}]], "expected keys speaker, text (and id)"),
    ([[{"text": "hi"}]], "expected keys speaker, text (and id), got ['text']"),
    ([[{"speaker": "A", "text": 3}]], 'dialogue 1, turn 1: "text" is int 3, not text'),
    ([[("A", "  ")]], 'dialogue 1, turn 1: "text" is blank'),
    ([[(" ", "hi")]], 'dialogue 1, turn 1: "speaker" is blank'),  # as the files and the server refuse it
    ([[{"id": None, "speaker": "A", "text": "hi"}]], 'dialogue 1, turn 1: has no "id"'),
    ([erckit.Dialogue("d1", (erckit.Utterance("u1", "", "hi"),))], "utterance u1: has no speaker"),
    ([[erckit.Utterance("u1", "A", None)]], "utterance u1: id, speaker and text must be text"),
    (None, ("<dialogues>: expected a file path, a list of dialogues, {dialogue id: turns} or a pandas DataFrame, "
           "got NoneType")),
    (5, "got int"),
    (pd.Series(["hi"]), "got Series"),  # a column, not the frame
    (["A: hello"], "expected a list of turns"),
    ([], "holds no dialogues"),
    (str(SAMPLE / "nope.json"), "no such file"),
])
def test_bad_python_input_is_one_line_data_error(model, data, problem):
    with pytest.raises(DataError, match=re.escape(problem)):
        model.label(data)


def test_dialogues_may_come_from_a_generator_and_speakers_may_be_numbers(model):
    turns = [(0, "你怎么又迟到了？"), (1, "对不起，路上堵车了。")]  # speakers numbered, as converted datasets do
    from_list = model.label([turns])
    assert model.label(d for d in [turns]) == from_list  # a generator of dialogues
    assert model.label([[("0", t) for _, t in turns[:1]] + [("1", turns[1][1])]]) == from_list


def test_python_turns_are_taken_as_the_files_take_them(model):
    """Ends stripped as every reader strips them: the same labels and probabilities as the trimmed turns."""
    padded = model.label([[(" A ", "  你好  "), {"id": " t2 ", "speaker": "B", "text": "好久不见！\n"}]])
    trimmed = model.label([[("A", "你好"), {"id": "t2", "speaker": "B", "text": "好久不见！"}]])
    assert padded == trimmed and [p.id for p in padded] == ["1_1", "t2"]


def meld_frame(dialogue_ids, utterance_ids, texts=None) -> pd.DataFrame:
    texts = texts or [f"turn {i}" for i in range(len(dialogue_ids))]
    return pd.DataFrame({"Dialogue_ID": dialogue_ids, "Utterance_ID": utterance_ids,
                         "Speaker": ["A", "B"] * (len(texts) // 2) + ["A"] * (len(texts) % 2), "Utterance": texts})


def test_a_dataframe_with_whole_number_float_ids_labels_as_integers(model):
    as_ints = model.label_frame(meld_frame([0, 0, 1], [0, 1, 0]))
    as_floats = model.label_frame(meld_frame([0.0, 0.0, 1.0], [0.0, 1.0, 0.0]))  # pandas' ints in a column with gaps
    assert as_floats["label"].tolist() == as_ints["label"].tolist()
    assert [p.id for p in model.label(meld_frame([0.0, 0.0], [0.0, 1.0]))] == ["dia0_utt0", "dia0_utt1"]


def test_a_spreadsheets_blank_rows_stay_unlabelled_and_the_others_keep_their_labels(model):
    nan = float("nan")
    whole = model.label_frame(meld_frame([0, 0, 1], [0, 1, 0]))
    frame = pd.concat([meld_frame([0, 0, 1], [0, 1, 0]), pd.DataFrame([[nan] * 4] * 2, columns=whole.columns[:4])],
                      ignore_index=True)  # read_csv of an export that ends in empty rows: float ids with NaN
    unparsed = pd.concat([meld_frame([0, 0, 1], [0, 1, 0]).astype(str),  # read_csv(keep_default_na=False): ""
                          pd.DataFrame([[""] * 4, [" "] * 4], columns=whole.columns[:4])], ignore_index=True)
    for labelled in (model.label_frame(frame), model.label_frame(unparsed)):
        assert labelled["label"].tolist()[:3] == whole["label"].tolist()
        for column in ("label", erckit.LABELS[0]):
            assert labelled[column].isna().tolist() == [False] * 3 + [True] * 2


@pytest.mark.parametrize(("ids", "problem"), [([0.0, 0.5], "Utterance_ID '0.5' is not a whole number"),
                                               ([0.0, float("nan")], "empty Utterance_ID$")])
def test_a_dataframe_with_fractional_or_missing_ids_is_refused(model, ids, problem):
    with pytest.raises(DataError, match=rf"^<DataFrame>: index 1: {problem}"):  # the row, by its index label
        model.label_frame(meld_frame([0, 0], ids))


def test_a_dataframe_error_names_the_row_by_its_index_label_across_line_breaks_in_cells(model):
    frame = meld_frame([0, 0, 0, 0], [0, 1, 2, 3], ["two\nlines", "three\nlines\nhere", "ok", "fine"])
    frame.index = ["a", "b", "c", "d"]
    frame.loc["d", "Speaker"] = None
    with pytest.raises(DataError, match=r"^<DataFrame>: index 'd', utterance dia0_utt3: empty Speaker$"):
        model.label_frame(frame)
    shuffled = meld_frame([0, 0, 0], [0, 1, 0]).iloc[[2, 1, 0]]  # an int64 index, out of order: a duplicate id
    with pytest.raises(DataError, match=r"^<DataFrame>: index 0, utterance dia0_utt0: duplicate utterance id \(index 2 "
                                        r"has it too\)$"):
        model.label_frame(shuffled)
    quoting = meld_frame([0, 0], [0, "line 2"])  # a cell quoting "line N" is shown as written, not renamed
    with pytest.raises(DataError, match=r"^<DataFrame>: index 1: Utterance_ID 'line 2' is not a whole number"):
        model.label_frame(quoting)


@pytest.mark.parametrize("given", [pd.Series([1]), [1], "dev.csv"])
def test_label_frame_of_something_else_than_a_dataframe_is_refused(model, given):
    with pytest.raises(DataError, match=rf"^<DataFrame>: expected a pandas DataFrame, got {type(given).__name__}$"):
        model.label_frame(given)


def test_a_dataframe_text_may_be_longer_than_csvs_field_limit(model):
    labelled = model.label_frame(meld_frame([0, 0], [0, 1], ["word " * 40_000, "hi"]))  # 200,000 characters
    assert len(labelled) == 2 and set(labelled["label"]) <= set(erckit.LABELS)


def test_train_takes_override_values_as_given(tmp_path):
    """Values are not re-read as YAML: a path with '#' and spaces stays whole, a string stays a string."""
    data = tmp_path / "my data #1"
    data.mkdir()
    train = data / "train: v2 #final.json"
    train.write_bytes((SAMPLE / "annotation_train.json").read_bytes())
    folder = erckit.train("tfidf", tmp_path / "model", {"data.train": train, "data.validation": None,  # a Path
                                                         "tfidf.c": 2, "tfidf.balanced": False})
    saved = json.loads((folder / "erckit_model.json").read_text(encoding="utf-8"))["config"]
    assert saved["data"]["train"] == str(train) and saved["data"]["validation"] is None
    assert saved["tfidf"]["c"] == 2 and saved["tfidf"]["balanced"] is False
    with pytest.raises(erckit.ConfigError, match="tfidf.balanced: expected bool"):
        erckit.train("tfidf", tmp_path / "other", {"data.train": str(train), "tfidf.balanced": "no"})
    with pytest.raises(erckit.ConfigError, match=r"^tfidf: data.train: expected str, got a DataFrame$"):  # one line
        erckit.train("tfidf", tmp_path / "other", {"data.train": pd.DataFrame({"text": ["hi"] * 30})})
    with pytest.raises(erckit.ConfigError, match="give the folder once, as out"):
        erckit.train("tfidf", tmp_path / "other", {"data.train": str(train), "out": str(tmp_path / "x")})
    with pytest.raises(DataError, match="erckit_model.json: is the input"):  # the output never replaces an input
        erckit.train("tfidf", data, {"data.train": str(data / "erckit_model.json")})
    assert not (tmp_path / "other").exists() and sorted(p.name for p in data.iterdir()) == [train.name]
