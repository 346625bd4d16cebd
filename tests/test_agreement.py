"""`erckit evaluate` for people who label: a second annotator's labelled file against the gold one (Cohen's
kappa, the confusion counts as numbers), and a gold file labelled only in part."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from conftest import SAMPLE
from erckit.cli import main
from erckit.data import Dialogue
from erckit.formats import read_dialogues
from erckit.formats.jsonl import dump
from erckit.labels import LABELS

GOLD = SAMPLE / "annotation_test.json"


def relabelled(dialogues: list[Dialogue], label) -> list[Dialogue]:
    """The dialogues with each utterance's label replaced by `label(number, utterance)` (None: unlabelled)."""
    numbers = iter(range(10**6))
    return [replace(d, utterances=tuple(replace(u, label=label(next(numbers), u)) for u in d.utterances))
            for d in dialogues]


def second_annotator(number: int, utterance) -> str:
    return "Neutral" if number % 4 == 0 else "Sad" if number % 7 == 0 else utterance.label


@pytest.mark.parametrize("form", ["jsonl", "csv"])
def test_a_second_annotators_file_is_scored_with_kappa_and_the_confusion_counts(form, tmp_path, capsys):
    gold = read_dialogues(GOLD)
    second = relabelled(gold, second_annotator)
    path = tmp_path / f"annotator2.{form}"
    if form == "jsonl":
        path.write_text(dump(second), encoding="utf-8")
    else:  # the same labels in a MELD-style sheet (its own ids): against a gold sheet of the same rows
        rows = [f"{d},{k},{u.speaker},{u.text},{u.label}" for d, dialogue in enumerate(second)
                for k, u in enumerate(dialogue.utterances)]
        path.write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion\n" + "\n".join(rows) + "\n", encoding="utf-8")
        gold_rows = [f"{d},{k},{u.speaker},{u.text},{u.label}" for d, dialogue in enumerate(gold)
                     for k, u in enumerate(dialogue.utterances)]
        (tmp_path / "gold.csv").write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion\n" + "\n".join(gold_rows)
                                           + "\n", encoding="utf-8")
    gold_path = GOLD if form == "jsonl" else tmp_path / "gold.csv"
    assert main(["evaluate", "--predictions", str(path), "--gold", str(gold_path), "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    first = [u.label for d in gold for u in d.utterances]
    other = [u.label for d in second for u in d.utterances]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == len(first) == 96 and first != other
    assert metrics["cohen_kappa"] == pytest.approx(cohen_kappa_score(first, other, labels=list(LABELS)), abs=1e-12)
    assert 0.5 < metrics["cohen_kappa"] < 1
    assert metrics["confusion"] == {"labels": list(LABELS),
                                    "counts": confusion_matrix(first, other, labels=list(LABELS)).tolist()}
    assert f"Cohen's kappa {metrics['cohen_kappa']:.4f}; confusion (rows gold, columns predicted):" in printed
    neutral = metrics["confusion"]["counts"][LABELS.index("Neutral")]
    assert "\nNeutral   " + "".join(f"{n:>9d}" for n in neutral) + "\n" in printed, printed  # the counts as text


def test_a_gold_file_labelled_in_part_is_refused_naming_the_flag_and_scored_with_it(tmp_path, capsys):
    gold = relabelled(read_dialogues(GOLD), lambda n, u: None if n % 3 == 0 else u.label)
    (tmp_path / "gold.jsonl").write_text(dump(gold), encoding="utf-8")
    utterances = [u for d in gold for u in d.utterances]
    predictions = tmp_path / "p.jsonl"  # every utterance predicted, as erckit predict writes them
    predictions.write_text("".join(json.dumps({"id": u.id, "label": "Neutral" if i % 2 else "Happy"}) + "\n"
                                   for i, u in enumerate(utterances)), encoding="utf-8")
    args = ["evaluate", "--predictions", str(predictions), "--gold", str(tmp_path / "gold.jsonl"), "--out",
            str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "has no gold label (--skip-unlabelled leaves out the unlabelled utterances)" in err, err
    assert not (tmp_path / "r").exists()

    assert main([*args, "--skip-unlabelled"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text(encoding="utf-8"))
    labelled = [(u, "Neutral" if i % 2 else "Happy") for i, u in enumerate(utterances) if u.label]
    assert metrics["n"] == len(labelled) == 64 and metrics["unlabelled_skipped"] == 32
    assert metrics["confusion"]["counts"] == confusion_matrix([u.label for u, _ in labelled], [p for _, p in labelled],
                                                              labels=list(LABELS)).tolist()
    assert "note: 32 unlabelled utterances are left out (--skip-unlabelled)" in captured.err
    assert f"n={len(labelled)}" in captured.out


def test_the_second_file_is_told_apart_from_predictions_as_the_readers_read_them(tmp_path, capsys):
    gold = read_dialogues(GOLD)
    utterances = [u for d in gold for u in d.utterances]
    lines = "".join(json.dumps({"id": u.id, "label": u.label}) + "\n" for u in utterances)
    for name, text in (("blank_first.jsonl", "\n" + lines), ("empty.jsonl", "")):  # predictions.jsonl, as before
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert main(["evaluate", "--predictions", str(tmp_path / "blank_first.jsonl"), "--gold", str(GOLD)]) == 0
    assert "macro-F1 1.0000" in capsys.readouterr().out
    assert main(["evaluate", "--predictions", str(tmp_path / "empty.jsonl"), "--gold", str(GOLD)]) == 2
    assert "empty.jsonl: holds no predictions" in capsys.readouterr().err
    m3ed = json.dumps(json.loads(GOLD.read_text(encoding="utf-8")), ensure_ascii=False)
    opened = m3ed.index(": {") + 3  # an M3ED copy whose first line opens its first show: {"Show": {
    (tmp_path / "annotator2.json").write_text(m3ed[:opened] + "\n" + m3ed[opened:], encoding="utf-8")
    assert main(["evaluate", "--predictions", str(tmp_path / "annotator2.json"), "--gold", str(GOLD)]) == 0
    assert "Cohen's kappa 1.0000" in capsys.readouterr().out


def test_a_second_annotators_gaps_are_left_out_with_the_gold_files_and_both_sheets_read_alike(tmp_path, capsys):
    header = "Dialogue_ID,Utterance_ID,Speaker,Line,Emotion\n"  # a text column of their own, for both sheets
    gold = tmp_path / "gold.csv"
    gold.write_text(header + "0,0,A,hi,joy\n0,1,B,ho,\n0,2,A,hm,anger\n1,0,C,ok,sadness\n", encoding="utf-8")
    other = tmp_path / "other.csv"
    other.write_text(header + "0,0,A,hi,joy\n0,1,B,ho,sadness\n0,2,A,hm,待定\n1,0,C,ok,anger\n", encoding="utf-8")
    args = ["evaluate", "--predictions", str(other), "--gold", str(gold), "--text-column", "Line", "--out",
            str(tmp_path / "r")]
    assert main(args) == 2
    assert "gold.csv: utterance dia0_utt1: has no gold label (--skip-unlabelled" in capsys.readouterr().err
    assert main([*args, "--skip-unlabelled"]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["n"], metrics["unlabelled_skipped"], metrics["accuracy"]) == (2, 2, 0.5)  # dia0_utt0, dia1_utt0
    assert "note: 2 unlabelled utterances are left out (--skip-unlabelled)" in capsys.readouterr().err
