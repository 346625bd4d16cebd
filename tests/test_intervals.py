"""Bootstrap intervals over dialogues, checked against scikit-learn on explicitly resampled files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sklearn.metrics import f1_score

from conftest import SAMPLE
from erckit.cli import main
from erckit.intervals import _resample_weights, bootstrap, dialogue_counts, f1_from_counts, paired_difference
from erckit.labels import LABELS


def random_file(seed: int, dialogues: int = 30):
    rng = random.Random(seed)
    gold, predicted, groups = [], [], []
    for d in range(dialogues):
        for _ in range(rng.randint(1, 12)):
            label = rng.choice(LABELS[:-1] if seed % 2 else LABELS)  # odd seeds: one class never occurs
            gold.append(label)
            predicted.append(label if rng.random() < 0.5 else rng.choice(LABELS))
            groups.append(f"d{d}")
    return gold, predicted, groups


@pytest.mark.parametrize("seed", range(6))
def test_counts_give_scikit_learns_scores(seed):
    gold, predicted, groups = random_file(seed)
    macro, weighted = f1_from_counts(dialogue_counts(gold, predicted, groups).sum(0))
    assert macro == pytest.approx(f1_score(gold, predicted, labels=list(LABELS), average="macro", zero_division=0))
    assert weighted == pytest.approx(f1_score(gold, predicted, labels=list(LABELS), average="weighted", zero_division=0))


def test_each_resample_is_a_file_of_drawn_dialogues():
    """The interval is the percentile of scikit-learn's macro-F1 on files rebuilt from the drawn dialogues."""
    gold, predicted, groups = random_file(3)
    resamples = 60
    weights = _resample_weights(30, resamples, seed=0)
    names = list(dict.fromkeys(groups))
    brute = []
    for draw in weights:
        g, p = [], []
        for name, times in zip(names, draw, strict=True):
            rows = [i for i, group in enumerate(groups) if group == name]
            for _ in range(int(times)):
                g += [gold[i] for i in rows]
                p += [predicted[i] for i in rows]
        brute.append(f1_score(g, p, labels=list(LABELS), average="macro", zero_division=0))
    result = bootstrap(gold, predicted, groups, resamples=resamples)
    assert result["macro_f1"] == pytest.approx([np.quantile(brute, 0.025), np.quantile(brute, 0.975)])
    assert result["dialogues"] == 30 and result["macro_f1"][0] < result["macro_f1"][1]


def test_paired_difference_of_a_method_with_itself_is_zero_and_a_better_one_is_above():
    gold, predicted, groups = random_file(4, dialogues=80)
    same = paired_difference(gold, predicted, predicted, groups)
    assert same["difference"] == 0 and same["interval"] == [0, 0] and same["share_first_higher"] == 0
    better = [g if i % 4 else p for i, (g, p) in enumerate(zip(gold, predicted, strict=True))]
    result = paired_difference(gold, better, predicted, groups)
    assert result["difference"] > 0 and result["interval"][0] > 0 and result["share_first_higher"] > 0.97


def test_evaluate_prints_and_stores_the_interval(tmp_path, capsys):
    gold = SAMPLE / "annotation_test.json"
    import json

    from erckit.data import dialogue_groups
    from erckit.formats import read_dialogues

    dialogues = read_dialogues(gold)
    utterances = [u for d in dialogues for u in d.utterances]
    predicted = ["Neutral" if i % 3 else u.label for i, u in enumerate(utterances)]
    lines = [json.dumps({"id": u.id, "label": label}) for u, label in zip(utterances, predicted, strict=True)]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["evaluate", "--predictions", str(tmp_path / "p.jsonl"), "--gold", str(gold),
                 "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    want = bootstrap([u.label for u in utterances], predicted, dialogue_groups(dialogues))  # gold first, by dialogue
    assert metrics["intervals"] == json.loads(json.dumps(want)) and want["resamples"] == 2000
    low, high = want["macro_f1"]
    assert f"bootstrap over 8 dialogues: macro-F1 95% CI {low:.3f}–{high:.3f}" in printed, printed


def test_two_dialogues_under_one_id_are_resampled_as_two(tmp_path, capsys):
    from conftest import m3ed_file
    from erckit.data import dialogue_groups
    from erckit.formats import read_dialogues

    gold = tmp_path / "annotation_test.json"
    m3ed_file(gold, {"d1": [("A", "你好", "Happy"), ("B", "嗯", "Neutral")]})
    data = json.loads(gold.read_text(encoding="utf-8"))  # a second show whose dialogue is also called d1
    data["Other"] = {"d1": {"SpeakerInfo": {}, "Dialog": {"o_1": {"Speaker": "A", "Text": "走开", "EmoAnnotation": {
        "final_main_emo": "Anger"}}}}}
    gold.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    dialogues = read_dialogues(gold)
    assert [d.id for d in dialogues] == ["d1", "d1"] and len(set(dialogue_groups(dialogues))) == 2
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"id": u.id, "label": "Neutral"}) + "\n"
                                              for d in dialogues for u in d.utterances), encoding="utf-8")
    assert main(["evaluate", "--predictions", str(tmp_path / "p.jsonl"), "--gold", str(gold)]) == 0
    assert "bootstrap over 2 dialogues" in capsys.readouterr().out


def test_one_dialogue_gets_no_interval_and_says_why(tmp_path, capsys):
    from conftest import m3ed_file

    gold = m3ed_file(tmp_path / "annotation_test.json", {"d1": [("A", "你好", "Happy"), ("B", "嗯", "Neutral")]})
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"id": f"d1_{i}", "label": "Neutral"}) + "\n"
                                              for i in (1, 2)), encoding="utf-8")
    assert main(["evaluate", "--predictions", str(tmp_path / "p.jsonl"), "--gold", str(gold)]) == 0
    printed = capsys.readouterr().out
    assert "no interval: one dialogue (the bootstrap resamples whole dialogues)" in printed and "CI" not in printed
