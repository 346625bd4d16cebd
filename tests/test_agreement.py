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
    assert "has no gold label (--skip-unlabelled scores the labelled utterances only)" in err, err
    assert not (tmp_path / "r").exists()

    assert main([*args, "--skip-unlabelled"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text(encoding="utf-8"))
    labelled = [(u, "Neutral" if i % 2 else "Happy") for i, u in enumerate(utterances) if u.label]
    assert metrics["n"] == len(labelled) == 64 and metrics["unlabelled_skipped"] == 32
    assert metrics["confusion"]["counts"] == confusion_matrix([u.label for u, _ in labelled], [p for _, p in labelled],
                                                              labels=list(LABELS)).tolist()
    assert f"note: 32 utterances of {tmp_path / 'gold.jsonl'} have no gold label and are left out" in captured.err
    assert f"n={len(labelled)}" in captured.out
