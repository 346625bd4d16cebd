"""Calibration on a constructed case with known optimal offsets; ensembling identical runs is the identity."""

import json

import numpy as np
import pytest

from conftest import SAMPLE, m3ed_file
from erckit.calibration import calibrate, cross_fitted_gain, fit_offsets, fit_prior_correction
from erckit.cli import main
from erckit.labels import LABELS
from erckit.predictions import Prediction, read_predictions, write_predictions

FEAR, NEUTRAL = LABELS.index("Fear"), LABELS.index("Neutral")


def constructed(n_fear: int = 20, n_neutral: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Fear utterances get p(Fear)=0.3, p(Neutral)=0.6; Neutral ones p(Neutral)=0.85, p(Fear)=0.1.

    Uncalibrated, Fear is never predicted; any Fear offset b with log(0.6/0.3) < b < log(0.85/0.1),
    i.e. 0.69 < b < 2.14, separates the classes perfectly.
    """
    probs = np.full((n_fear + n_neutral, len(LABELS)), 0.0)
    probs[:n_fear, FEAR], probs[:n_fear, NEUTRAL] = 0.3, 0.6
    probs[n_fear:, FEAR], probs[n_fear:, NEUTRAL] = 0.1, 0.85
    probs += 0.05 / (len(LABELS) - 2) * (probs == 0)
    gold = np.array([FEAR] * n_fear + [NEUTRAL] * n_neutral)
    return np.log(probs), gold


def test_fitted_offsets_fall_in_the_known_optimal_interval():
    log_probs, gold = constructed()
    offsets = fit_offsets(log_probs, gold)
    assert np.log(0.6 / 0.3) < offsets[FEAR] < np.log(0.85 / 0.1)
    assert offsets[NEUTRAL] == 0
    assert all(offsets[k] == 0 for k in range(len(LABELS)) if k not in (FEAR, NEUTRAL))
    assert (np.argmax(log_probs + offsets, axis=1) == gold).all()


def test_prior_correction_finds_a_separating_temperature():
    """p̄(Fear) = 0.14, p̄(Neutral) = 0.8: offsets τ·log(p̄_Neutral/p̄_c). Fear is separated for
    0.40 < τ < 1.23, and above τ ≈ 1.05 the five absent classes (p̄ = 0.01) overtake Neutral."""
    log_probs, gold = constructed()
    offsets = fit_prior_correction(log_probs, gold)
    tau = offsets[FEAR] / np.log(0.8 / 0.14)
    assert 0.39 < tau < 1.05
    assert offsets[NEUTRAL] == 0
    assert offsets[0] == pytest.approx(tau * np.log(0.8 / 0.01))
    assert (np.argmax(log_probs + offsets, axis=1) == gold).all()


def test_calibrate_keeps_the_family_with_the_higher_cross_fitted_score():
    from erckit.data import Dialogue, Utterance

    log_probs, gold = constructed()
    labels = [LABELS[g] for g in gold]
    dialogues = [
        Dialogue(f"d{k}", tuple(Utterance(f"d{k}_{j}", "A", "x", labels[k * 5 + j]) for j in range(5)))
        for k in range(len(gold) // 5)
    ]
    offsets, report = calibrate(np.exp(log_probs), dialogues)
    assert set(report["candidates"]) == {"offsets", "prior"}
    assert report["candidates"][report["family"]] == max(report["candidates"].values())
    assert report["macro_f1_after"] > report["macro_f1_before"]
    assert np.log(0.6 / 0.3) < offsets["Fear"] < np.log(0.85 / 0.1)


def test_cross_fitted_gain_is_reported_before_and_after():
    log_probs, gold = constructed()
    report = cross_fitted_gain(log_probs, gold, groups=np.arange(len(gold)) // 5)
    assert report["macro_f1_before"] < 0.3  # only two classes present, Fear never predicted
    assert report["macro_f1_after"] == pytest.approx(2 / 7)  # both present classes perfect: 2 of 7 classes


def predictions_with_probs(tmp_path, name, rows):
    path = tmp_path / name
    write_predictions(path, [Prediction(i, LABELS[int(np.argmax(p))], dict(zip(LABELS, p))) for i, p in rows])
    return path


def test_ensemble_of_identical_inputs_is_the_identity(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"u{i}", rng.dirichlet(np.ones(len(LABELS)))) for i in range(30)]
    one = predictions_with_probs(tmp_path, "a.jsonl", rows)
    out = tmp_path / "ens.jsonl"
    assert main(["ensemble", "--predictions", str(one), str(one), "--out", str(out)]) == 0
    original, averaged = read_predictions(one), read_predictions(out)
    assert list(original) == list(averaged)
    for utt_id, prediction in original.items():
        assert averaged[utt_id].label == prediction.label
        assert averaged[utt_id].probs == pytest.approx(prediction.probs, abs=1e-6)


def test_ensemble_averages_and_refuses_mismatched_ids(tmp_path, capsys):
    a = predictions_with_probs(tmp_path, "a.jsonl", [("u1", np.eye(7)[0] * 0.9 + 0.1 / 7)])
    b = predictions_with_probs(tmp_path, "b.jsonl", [("u1", np.eye(7)[1] * 0.6 + 0.4 / 7)])
    out = tmp_path / "ens.jsonl"
    assert main(["ensemble", "--predictions", str(a), str(b), "--weights", "1", "3", "--out", str(out)]) == 0
    assert read_predictions(out)["u1"].label == LABELS[1]
    c = predictions_with_probs(tmp_path, "c.jsonl", [("u2", np.full(7, 1 / 7))])
    assert main(["ensemble", "--predictions", str(a), str(c), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "predicts other ids" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()


def test_calibrate_cli_on_validation_predictions(tmp_path):
    log_probs, gold = constructed(10, 40)
    dialogue = [("A" if i % 2 else "B", f"第{i}句", LABELS[g]) for i, g in enumerate(gold)]
    validation = m3ed_file(tmp_path / "annotation_validation.json",
                           {f"d{k}": dialogue[k * 10:(k + 1) * 10] for k in range(5)})
    ids = [f"d{k}_{j}" for k in range(5) for j in range(1, 11)]
    probs = np.exp(log_probs) / np.exp(log_probs).sum(axis=1, keepdims=True)  # a predictions file holds distributions
    preds = predictions_with_probs(tmp_path, "val.jsonl", list(zip(ids, probs)))
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--predictions", str(preds), "--validation", str(validation), "--out", str(out)]) == 0
    offsets = json.loads(out.read_text())["offsets"]
    assert np.log(2) < offsets["Fear"] < np.log(8.5)


@pytest.mark.slow  # 85 s on 2 cores: CI runs it with -m slow
def test_calibrate_model_stores_offsets_predict_applies_and_removes_them(tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["train", "--config", "tfidf", f"out={model}",
                 f"data.train={SAMPLE / 'annotation_train.json'}",
                 f"data.validation={SAMPLE / 'annotation_validation.json'}"]) == 0
    validation, test = SAMPLE / "annotation_validation.json", SAMPLE / "annotation_test.json"
    raw = tmp_path / "raw.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(test), "--out", str(raw)]) == 0
    # on the sample, calibration lowers cross-fitted validation macro-F1 (0.4649 -> 0.4259): nothing stored
    assert main(["calibrate", "--model", str(model), "--validation", str(validation)]) == 0
    assert "not stored" in capsys.readouterr().out
    assert "calibration" not in json.loads((model / "erckit_model.json").read_text())
    assert main(["calibrate", "--model", str(model), "--validation", str(validation), "--force"]) == 0
    info = json.loads((model / "erckit_model.json").read_text())
    offsets = np.array([info["calibration"][label] for label in LABELS])
    assert info["calibration_report"]["family"] in ("offsets", "prior") and offsets.any()
    calibrated = tmp_path / "calibrated.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(test), "--out", str(calibrated)]) == 0
    before, after = read_predictions(raw), read_predictions(calibrated)
    for utt_id, prediction in before.items():
        assert after[utt_id].probs == prediction.probs  # probabilities stay the model's own
        scores = np.log(np.clip([prediction.probs[label] for label in LABELS], 1e-12, 1)) + offsets
        assert after[utt_id].label == LABELS[int(np.argmax(scores))]
    # on its own training file the gain is tiny (0.9906 -> 0.9935): below --min-gain 0.01, stored with 0
    train = SAMPLE / "annotation_train.json"
    capsys.readouterr()
    assert main(["calibrate", "--model", str(model), "--validation", str(train)]) == 0
    out = capsys.readouterr().out
    assert "not stored" in out and "below --min-gain 0.01" in out
    assert "calibration" not in json.loads((model / "erckit_model.json").read_text())
    assert main(["calibrate", "--model", str(model), "--validation", str(train), "--min-gain", "0"]) == 0
    assert "calibration" in json.loads((model / "erckit_model.json").read_text())
    # calibrating again without a gain removes the offsets stored before
    assert main(["calibrate", "--model", str(model), "--validation", str(validation)]) == 0
    assert "calibration" not in json.loads((model / "erckit_model.json").read_text())
    assert main(["predict", "--model", str(model), "--input", str(test), "--out", str(calibrated)]) == 0
    assert {k: p.label for k, p in read_predictions(calibrated).items()} == {k: p.label for k, p in before.items()}


def test_ensemble_says_when_an_input_was_calibrated(tmp_path, capsys):
    probs = dict(zip(LABELS, np.eye(7)[NEUTRAL] * 0.6 + 0.4 / 7))
    calibrated = tmp_path / "calibrated.jsonl"
    write_predictions(calibrated, [Prediction("u1", "Fear", probs)])  # Fear by offsets, Neutral by argmax
    plain = predictions_with_probs(tmp_path, "plain.jsonl", [("u1", np.array(list(probs.values())))])
    out = tmp_path / "ens.jsonl"
    assert main(["ensemble", "--predictions", str(calibrated), str(plain), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{calibrated}: 1 labels differ" in err and str(plain) not in err
    assert read_predictions(out)["u1"].label == "Neutral"


def test_the_searches_macro_f1_equals_sklearns_exactly():
    from sklearn.metrics import f1_score

    from erckit.calibration import _macro_f1
    from erckit.metrics import macro_f1_of_indices

    rng = np.random.default_rng(7)
    for size in (1, 2, 9, 40, 500):
        for _ in range(40):
            log_probs = np.log(rng.dirichlet(np.full(7, 0.3), size=size))
            gold = rng.choice(7, size=size, p=[0.02, 0.1, 0.08, 0.2, 0.5, 0.08, 0.02])
            offsets = rng.normal(0, 1, 7)
            predicted = np.argmax(log_probs + offsets, axis=1)
            expected = f1_score(gold, predicted, labels=range(7), average="macro", zero_division=0)
            assert _macro_f1(gold, log_probs, offsets) == expected == macro_f1_of_indices(gold, predicted)
