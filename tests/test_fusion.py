"""A fusion model folder: erckit ensemble --models writes it, erckit predict and erckit.models.load label with it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import SAMPLE
from erckit.cli import main
from erckit.ensemble import fusion_weights, probability_matrix, weight_grid
from erckit.formats import read_dialogues
from erckit.labels import LABELS
from erckit.metrics import scores
from erckit.models import load
from erckit.predictions import read_predictions

VALIDATION, TEST = SAMPLE / "annotation_validation.json", SAMPLE / "annotation_test.json"


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    data = [f"data.train={SAMPLE / 'annotation_train.json'}", f"data.validation={VALIDATION}"]
    for name, extra in (("words", ["tfidf.ngram_max=1", "tfidf.c=0.1"]), ("trigrams", [])):
        assert main(["train", "--config", "tfidf", *data, *extra,
                     f"out={folder / name}"]) == 0
    return folder / "words", folder / "trigrams"


def predicted_probs(path, dialogues):
    ids = [u.id for d in dialogues for u in d.utterances]
    return probability_matrix(read_predictions(path), ids, path)


def test_weights_are_the_best_on_validation_and_predict_averages_the_members(members, tmp_path, capsys):
    fused = tmp_path / "fused"
    assert main(["ensemble", "--models", *map(str, members), "--validation", str(VALIDATION), "--out", str(fused)]) == 0
    printed = capsys.readouterr().out
    assert "macro-F1" in printed
    summary = json.loads((fused / "erckit_model.json").read_text())["summary"]
    weights = summary["weights"]
    validation = read_dialogues(VALIDATION)
    gold = [u.label for d in validation for u in d.utterances]
    words, trigrams = (load(m).probabilities(validation) for m in members)
    alone = [scores(gold, [LABELS[i] for i in p.argmax(1)])["macro_f1"] for p in (words, trigrams)]
    assert summary["val_member_macro_f1"] == pytest.approx(alone)  # each member's own figure, kept beside
    assert ("alone scores" in printed) == (max(alone) > summary["val_macro_f1"])  # told when a member is better
    macro = {w: scores(gold, [LABELS[i] for i in (w[0] * words + w[1] * trigrams).argmax(1)])["macro_f1"]
             for w in weight_grid(2)}
    assert macro[tuple(round(w, 1) for w in weights)] == max(macro.values())
    test = read_dialogues(TEST)
    for name, model in (("fused", fused), *zip(("words", "trigrams"), members, strict=True)):
        assert main(["predict", "--model", str(model), "--input", str(TEST), "--out", str(tmp_path / f"{name}.jsonl")]) == 0
    expected = weights[0] * predicted_probs(tmp_path / "words.jsonl", test) + weights[1] * predicted_probs(
        tmp_path / "trigrams.jsonl", test)
    np.testing.assert_allclose(predicted_probs(tmp_path / "fused.jsonl", test), expected, atol=2e-6)
    assert load(fused).kind == "fusion"


def test_given_weights_never_score_validation_and_chosen_ones_are_the_grid_best():
    def no_validation():
        raise AssertionError("given weights must not load or score the members on validation")

    given = fusion_weights([1, 3], 2, no_validation)
    assert (given.shares, given.origin, given.validation_macro_f1) == ([0.25, 0.75], "given", None)
    gold = ["Happy", "Sad", "Sad", "Neutral"]
    right = np.eye(7)[[LABELS.index(label) for label in gold]]  # sure of the gold label
    wrong = np.eye(7)[[LABELS.index("Anger")] * 4]
    chosen = fusion_weights(None, 2, lambda: ([wrong, right], gold))
    assert chosen.origin == "validation macro-F1" and chosen.shares[1] > chosen.shares[0]
    perfect = scores(gold, gold)  # macro-F1 over all seven labels, four of them absent here
    assert chosen.validation_macro_f1 == pytest.approx(perfect["macro_f1"])
    assert chosen.validation_weighted_f1 == pytest.approx(perfect["weighted_f1"]) == pytest.approx(1.0)


def test_more_members_than_weight_steps_are_fused_in_equal_shares(members, tmp_path, capsys):
    folders = [shutil.copytree(members[i % 2], tmp_path / f"member{i}") for i in range(11)]  # 11 > 1 / 0.1
    assert weight_grid(11) == [(1 / 11,) * 11]
    fused = tmp_path / "fused"
    assert main(["ensemble", "--models", *map(str, folders), "--validation", str(VALIDATION), "--out", str(fused)]) == 0
    weights = json.loads((fused / "erckit_model.json").read_text())["summary"]["weights"]
    assert weights == pytest.approx([1 / 11] * 11)


def test_given_weights_are_kept_and_bad_fusions_end_in_one_line(members, tmp_path, capsys):
    fused = tmp_path / "fused"
    assert main(["ensemble", "--models", *map(str, members), "--weights", "1", "3", "--out", str(fused)]) == 0
    assert json.loads((fused / "erckit_model.json").read_text())["summary"]["weights"] == [0.25, 0.75]
    capsys.readouterr()
    cases = [
        (["--models", str(members[0]), "--weights", "1", "--out", str(tmp_path / "one")], "two or more model folders"),
        (["--models", *map(str, members), "--out", str(tmp_path / "no-weights")],
         "--models needs --weights (one per model) or --gold (a labelled file to choose them on)"),
        (["--models", str(members[0]), str(tmp_path), "--weights", "1", "1", "--out", str(tmp_path / "x")],
         "is not an erckit model folder"),
        (["--predictions", "a.jsonl", "b.jsonl", "--validation", str(VALIDATION), "--out", str(tmp_path / "y")],
         "--gold chooses the weights of --models"),
        (["--models", str(fused), str(members[0]), "--weights", "1", "1", "--out", str(tmp_path / "nested")],
         "is itself a fusion; name its members instead"),
    ]
    for argv, problem in cases:
        assert main(["ensemble", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("erckit ensemble: error:") and err.count("\n") == 1 and problem in err, err
        assert not (tmp_path / argv[-1]).exists()
    moved = tmp_path / "moved"
    shutil.copytree(members[0], moved)
    assert main(["ensemble", "--models", str(moved), str(members[1]), "--weights", "1", "1", "--out", str(tmp_path / "f2")]) == 0
    shutil.rmtree(moved)
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "f2"), "--input", str(TEST), "--out", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"its member moved is neither at {moved}" in err and "moved apart?" in err
    assert not (tmp_path / "p.jsonl").exists()


def test_a_runs_folder_moved_or_copied_whole_keeps_its_fusion_working(members, tmp_path, capsys):
    """The members are found at their path from the fusion folder; a fusion moved alone finds them where they were."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for member in members:
        shutil.copytree(member, runs / member.name)
    assert main(["ensemble", "--models", *(str(runs / m.name) for m in members), "--weights", "1", "3",
                 "--out", str(runs / "fused")]) == 0
    assert main(["predict", "--model", str(runs / "fused"), "--input", str(TEST), "--out", str(tmp_path / "a.jsonl")]) == 0
    elsewhere = tmp_path / "elsewhere" / "runs"
    shutil.move(runs, elsewhere)  # another machine: the absolute paths saved in the fusion are gone
    assert main(["predict", "--model", str(elsewhere / "fused"), "--input", str(TEST), "--out", str(tmp_path / "b.jsonl")]) == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    again = ["ensemble", "--models", *(str(elsewhere / m.name) for m in members), "--weights", "1", "3",
             "--out", str(elsewhere / "fused")]
    assert main(again) == 0 and "already holds this finished run" in capsys.readouterr().out  # the same recipe, moved
    assert main(again[:-4] + ["3", "1", "--out", str(elsewhere / "fused")]) == 2
    assert "fusion.weights differs" in capsys.readouterr().err
    alone = tmp_path / "fused-alone"
    shutil.move(elsewhere / "fused", alone)  # the fusion moved away from its members: their absolute paths...
    for member in members:
        shutil.copytree(elsewhere / member.name, runs / member.name)  # ...hold them again
    shutil.rmtree(elsewhere)
    assert main(["predict", "--model", str(alone), "--input", str(TEST), "--out", str(tmp_path / "c.jsonl")]) == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "c.jsonl").read_text()


def test_a_fusion_recipe_trains_with_erckit_train_and_reports_both_f1(members, tmp_path, capsys):
    recipe = tmp_path / "fusion.yaml"
    recipe.write_text(f"model: fusion\nfusion:\n  members: [{members[0]}, {members[1]}]\n", encoding="utf-8")
    out = tmp_path / "fused"
    assert main(["train", "--config", str(recipe), f"data.validation={VALIDATION}", "--out", str(out)]) == 0
    summary = json.loads((out / "erckit_model.json").read_text())["summary"]
    gold = [u.label for d in read_dialogues(VALIDATION) for u in d.utterances]
    probs = [load(m).probabilities(read_dialogues(VALIDATION)) for m in members]
    mixed = sum(w * p for w, p in zip(summary["weights"], probs, strict=True))
    expected = scores(gold, [LABELS[i] for i in mixed.argmax(1)])
    assert summary["val_macro_f1"] == pytest.approx(expected["macro_f1"])
    assert summary["val_weighted_f1"] == pytest.approx(expected["weighted_f1"])
    assert f"weighted-F1 {expected['weighted_f1']:.4f}" in capsys.readouterr().out
