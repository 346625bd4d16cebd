import json
import random

import pytest

from conftest import BMELD, SAMPLE, m3ed_file
from erckit.cli import main
from erckit.formats import read_dialogues
from erckit.labels import LABELS
from erckit.predictions import Prediction, write_predictions


def gold_as_predictions(raw, path, *, shuffle=True, drop=0):
    predictions = [Prediction(u.id, u.label) for d in read_dialogues(raw) for u in d.utterances]
    if shuffle:
        random.Random(0).shuffle(predictions)
    write_predictions(path, predictions[drop:])
    return predictions


def test_m3ed_round_trip_equals_raw_and_scores_one(reference_file, tmp_path):
    preds = tmp_path / "predictions.jsonl"
    gold_as_predictions(reference_file, preds)
    out = tmp_path / "test_label.json"
    assert main(["combine", "--predictions", str(preds), "--raw", str(reference_file), "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(reference_file.read_text(encoding="utf-8"))
    report = tmp_path / "report"
    assert main(["evaluate", "--predictions", str(preds), "--gold", str(out), "--out", str(report)]) == 0
    assert json.loads((report / "metrics.json").read_text())["macro_f1"] == 1.0
    assert (report / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unlabelled_test_file_gets_labels_written_in(tmp_path):
    raw = m3ed_file(tmp_path / "annotation_test.json", {"d1": [("A", "你好", None), ("B", "滚开", None)]})
    preds = tmp_path / "p.jsonl"
    write_predictions(preds, [Prediction("d1_2", "Anger"), Prediction("d1_1", "Neutral")])
    out = tmp_path / "test_label.json"
    assert main(["combine", "--predictions", str(preds), "--raw", str(raw), "--out", str(out)]) == 0
    dialog = json.loads(out.read_text(encoding="utf-8"))["Show"]["d1"]["Dialog"]
    assert dialog["d1_1"]["EmoAnnotation"]["final_main_emo"] == "Neutral"
    assert dialog["d1_2"]["EmoAnnotation"]["final_main_emo"] == "Anger"
    assert dialog["d1_2"]["Text"] == "滚开" and dialog["d1_2"]["StartTime"] == "00:00:02.000"


def test_labels_written_over_a_labelled_file_are_noted(tmp_path, capsys):
    raw = m3ed_file(tmp_path / "annotation_test.json", {"d1": [("A", "你好", "Happy"), ("B", "滚开", None)]})
    preds = tmp_path / "p.jsonl"
    write_predictions(preds, [Prediction("d1_2", "Anger"), Prediction("d1_1", "Neutral")])
    out = tmp_path / "test_label.json"
    assert main(["combine", "--predictions", str(preds), "--raw", str(raw), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"note: {raw} was labelled already: 1 of the 2 labels written to {out} replace its own" in err
    assert json.loads(out.read_text(encoding="utf-8"))["Show"]["d1"]["Dialog"]["d1_1"]["EmoAnnotation"][
        "final_main_emo"] == "Neutral"
    assert main(["combine", "--predictions", str(preds), "--raw", str(raw), "--out", str(tmp_path / "o2.json")]) == 0
    unlabelled = m3ed_file(tmp_path / "unlabelled.json", {"d1": [("A", "你好", None), ("B", "滚开", None)]})
    capsys.readouterr()
    assert main(["combine", "--predictions", str(preds), "--raw", str(unlabelled), "--out", str(tmp_path / "o3.json")]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.needs_data
def test_bmeld_csv_round_trip_keeps_encoding_and_values(tmp_path):
    raw = BMELD / "test_sent_emo.csv"
    preds = tmp_path / "p.jsonl"
    gold_as_predictions(raw, preds)
    out = tmp_path / "test_label.csv"
    assert main(["combine", "--predictions", str(preds), "--raw", str(raw), "--out", str(out)]) == 0
    assert out.read_bytes().decode("gbk").splitlines() == raw.read_bytes().decode("gbk").splitlines()


@pytest.mark.needs_data
def test_wrong_labels_are_written_in_meld_words(tmp_path):
    raw = BMELD / "dev_sent_emo.csv"
    preds = [Prediction(u.id, "Happy") for d in read_dialogues(raw) for u in d.utterances]
    write_predictions(tmp_path / "p.jsonl", preds)
    out = tmp_path / "out.csv"
    assert main(["combine", "--predictions", str(tmp_path / "p.jsonl"), "--raw", str(raw), "--out", str(out)]) == 0
    assert {u.label for d in read_dialogues(out) for u in d.utterances} == {"Happy"}
    assert ",joy," in out.read_bytes().decode("gbk")


@pytest.mark.parametrize(("own", "written"), [(("neutral", "sadness"), ("neutral", "joy")),  # MELD's words
                                              (("neutral", "sad"), ("Neutral", "Happy")),  # not all MELD's: erckit's
                                              (("Neutral", "Sad"), ("Neutral", "Happy")), (("", ""), ("neutral", "joy"))])
def test_a_csvs_labels_are_written_in_meld_words_only_where_the_file_uses_them(own, written, tmp_path):
    raw = tmp_path / "test.csv"
    raw.write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion\n"
                   f"0,0,A,hi,{own[0]}\n0,1,B,we won!,{own[1]}\n", encoding="utf-8")
    write_predictions(tmp_path / "p.jsonl", [Prediction("dia0_utt0", "Neutral"), Prediction("dia0_utt1", "Happy")])
    out = tmp_path / "out.csv"
    assert main(["combine", "--predictions", str(tmp_path / "p.jsonl"), "--raw", str(raw), "--out", str(out)]) == 0
    assert [line.rsplit(",", 1)[1] for line in out.read_text(encoding="utf-8").splitlines()[1:]] == list(written)


def test_missing_id_is_refused_and_nothing_written(reference_file, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    gold_as_predictions(reference_file, preds, drop=1)
    out = tmp_path / "test_label.json"
    assert main(["combine", "--predictions", str(preds), "--raw", str(reference_file), "--out", str(out)]) == 2
    assert "have no prediction" in capsys.readouterr().err
    assert not out.exists()


def test_extra_id_is_refused(reference_file, tmp_path, capsys):
    preds = gold_as_predictions(reference_file, tmp_path / "p.jsonl")
    write_predictions(tmp_path / "p.jsonl", preds + [Prediction("nope_1", "Sad")])
    out = tmp_path / "o.json"
    assert main(["combine", "--predictions", str(tmp_path / "p.jsonl"), "--raw", str(reference_file), "--out", str(out)]) == 2
    assert "not in" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(("raw_name", "out_name"), [("test.csv", "labelled.json"), ("test.json", "labelled.csv")])
def test_an_output_named_for_another_format_is_refused(raw_name, out_name, tmp_path, capsys):
    raw = tmp_path / raw_name
    if raw_name.endswith(".csv"):
        raw.write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion\n0,0,A,hi,joy\n0,1,B,ho,anger\n",
                       encoding="utf-8")
    else:
        m3ed_file(raw, {"d1": [("A", "hi", "Happy"), ("B", "ho", "Anger")]})
    gold_as_predictions(raw, tmp_path / "p.jsonl")
    out = tmp_path / out_name
    assert main(["combine", "--predictions", str(tmp_path / "p.jsonl"), "--raw", str(raw), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: is named {out.suffix}, but the labelled file keeps the format of {raw}: name it {raw.suffix}" in err
    assert err.count("\n") == 1 and not out.exists()


def test_llamafactory_generated_predictions_flow(reference_file, tmp_path):
    """The reference pipeline's flow: prepare -> LLaMA-Factory predict (rows in order) -> combine with the prepared file."""
    prepared = tmp_path / "prepared"
    assert main(["prepare", "--test", str(reference_file), "--out", str(prepared)]) == 0
    records = json.loads((prepared / "data_test.json").read_text(encoding="utf-8"))
    rows = [{"prompt": f"<reserved_106>{r['instruction']}<reserved_107>", "predict": f"{r['output']}。", "label": ""}
            for r in records]
    generated = tmp_path / "generated_predictions.jsonl"
    generated.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "test_label.json"
    args = ["combine", "--predictions", str(generated), "--prepared", str(prepared / "data_test.json"),
            "--raw", str(reference_file), "--out", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(reference_file.read_text(encoding="utf-8"))
    rows[0]["predict"] = "我觉得是开心或者难过"
    generated.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out.unlink()
    assert main(args) == 2 and not out.exists()


def test_sample_round_trip(tmp_path):
    raw = SAMPLE / "annotation_test.json"
    gold_as_predictions(raw, tmp_path / "p.jsonl")
    out = tmp_path / "test_label.json"
    assert main(["combine", "--predictions", str(tmp_path / "p.jsonl"), "--raw", str(raw), "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(raw.read_text(encoding="utf-8"))


def test_outputs_get_normal_permissions(reference_file, tmp_path):
    import os
    import stat

    preds = tmp_path / "p.jsonl"
    gold_as_predictions(reference_file, preds)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(preds.stat().st_mode) == 0o666 & ~umask


@pytest.mark.needs_data
def test_an_unlabelled_meld_csv_gets_meld_words(tmp_path):
    """MELD's test CSV without its Emotion column: the labels written back are MELD's words."""
    import csv
    import io

    text = (BMELD / "dev_sent_emo.csv").read_bytes().decode("gbk")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    drop = rows[0].index("Emotion")
    raw = tmp_path / "unlabelled.csv"
    raw.write_text("".join(",".join(f'"{c}"' for i, c in enumerate(r) if i != drop) + "\n" for r in rows[:40]),
                   encoding="utf-8")
    dialogues = read_dialogues(raw)
    assert all(u.label is None for d in dialogues for u in d.utterances)
    write_predictions(tmp_path / "p.jsonl", [Prediction(u.id, "Happy") for d in dialogues for u in d.utterances])
    out = tmp_path / "out.csv"
    assert main(["combine", "--predictions", str(tmp_path / "p.jsonl"), "--raw", str(raw), "--out", str(out)]) == 0
    written = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(written) == 39 and {row["Emotion"] for row in written} == {"joy"}


def test_write_labels_refuses_an_unknown_format_and_a_file_changed_since_it_was_checked(tmp_path):
    from erckit.data import DataError
    from erckit.formats import read_dialogue_file, write_labels

    raw = tmp_path / "annotation_test.json"
    raw.write_bytes((SAMPLE / "annotation_test.json").read_bytes())
    dialogues, digest = read_dialogue_file(raw)
    labels = {u.id: "Happy" for d in dialogues for u in d.utterances}
    out = tmp_path / "test_label.json"
    with pytest.raises(DataError, match=r"annotation_test.json: unknown format 'xml' \(choose from"):
        write_labels(raw, labels, out, "xml")
    raw.write_bytes(raw.read_bytes().replace(b"\n", b"\n ", 1))  # edited after its ids were checked
    with pytest.raises(DataError, match="annotation_test.json: changed while it was being read: run the command again"):
        write_labels(raw, labels, out, sha256=digest)
    assert not out.exists()


@pytest.mark.parametrize("form", ["m3ed", "csv", "jsonl"])
def test_confidence_is_written_beside_each_label_to_review_the_least_sure_first(form, tmp_path, capsys):
    from erckit.formats.jsonl import dump

    dialogues = read_dialogues(SAMPLE / "annotation_test.json")[:2]
    raw = tmp_path / {"m3ed": "test.json", "csv": "test.csv", "jsonl": "test.jsonl"}[form]
    if form == "m3ed":
        m3ed_file(raw, {d.id: [(u.speaker, u.text, None) for u in d.utterances] for d in dialogues})
    elif form == "csv":
        raw.write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance\n" + "".join(
            f"{d},{k},{u.speaker},{u.text}\n" for d, dialogue in enumerate(dialogues)
            for k, u in enumerate(dialogue.utterances)), encoding="utf-8")
    else:
        raw.write_text(dump(dialogues), encoding="utf-8")
    ids = [u.id for d in read_dialogues(raw) for u in d.utterances]
    rng = random.Random(1)
    predictions = []
    for i in ids:
        weights = [rng.random() for _ in LABELS]
        probs = {label: w / sum(weights) for label, w in zip(LABELS, weights, strict=True)}
        predictions.append(Prediction(i, max(probs, key=probs.get), probs))
    write_predictions(tmp_path / "p.jsonl", predictions)
    out = tmp_path / f"labelled{raw.suffix}"
    args = ["combine", "--predictions", str(tmp_path / "p.jsonl"), "--raw", str(raw), "--out", str(out)]
    assert main(args) == 0
    assert "onfidence" not in out.read_text(encoding="utf-8")  # only when asked
    assert main([*args, "--confidence"]) == 0
    text = out.read_text(encoding="utf-8")
    if form == "m3ed":
        written = {utt_id: record["EmoAnnotation"]["final_main_emo_confidence"] for show in json.loads(text).values()
                   for dialogue in show.values() for utt_id, record in dialogue["Dialog"].items()}
    elif form == "csv":
        rows = text.splitlines()
        assert rows[0].endswith(",Emotion,Confidence")
        written = {f"dia{r.split(',')[0]}_utt{r.split(',')[1]}": float(r.rsplit(",", 1)[1]) for r in rows[1:]}
    else:
        written = {u["id"]: u["confidence"] for line in text.splitlines() for u in json.loads(line)["utterances"]}
    assert written == {p.id: round(p.probs[p.label], 4) for p in predictions} and len(written) == len(ids) > 10
    assert [u.label for d in read_dialogues(out) for u in d.utterances] == [p.label for p in predictions]


def test_confidence_needs_probabilities(reference_file, tmp_path, capsys):
    gold_as_predictions(reference_file, tmp_path / "p.jsonl")  # labels only, no probabilities
    out = tmp_path / "o.json"
    assert main(["combine", "--predictions", str(tmp_path / "p.jsonl"), "--raw", str(reference_file), "--out", str(out),
                 "--confidence"]) == 2
    err = capsys.readouterr().err
    assert "has no probabilities, so no confidence to write" in err and err.count("\n") == 1 and not out.exists()
    assert main(["combine", "--predictions", str(tmp_path / "p.jsonl"), "--prepared", str(tmp_path / "data_test.json"),
                 "--raw", str(reference_file), "--out", str(out), "--confidence"]) == 2
    assert "--confidence needs predictions.jsonl's probabilities" in capsys.readouterr().err and not out.exists()
