"""What a reader meets: calibrated labels marked in the file and the summary line, honest fold counts,
report wording, the cache location and the portable lock of a resumable prediction."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import m3ed_file
from erckit.cache import default_cache_dir
from erckit.calibration import cross_fitted_gain
from erckit.cli import main
from erckit.labels import LABELS
from erckit.llm.predict import PredictSummary
from erckit.llm.resume import lock_partial
from erckit.models import store_calibration
from erckit.predictions import Prediction, calibrated, from_probabilities, read_predictions, write_predictions

NEUTRAL, FEAR = LABELS.index("Neutral"), LABELS.index("Fear")
DIALOGUES = {
    "d1": [("A", "你好呀", "Happy"), ("B", "嗯", "Neutral"), ("A", "太可怕了", "Fear")],
    "d2": [("A", "我很开心", "Happy"), ("B", "好的", "Neutral")],
    "d3": [("A", "真吓人", "Fear"), ("B", "是吗", "Neutral"), ("A", "哈哈", "Happy")],
}


def one_line_error(capsys, *parts: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err


def tfidf_recipe(tmp_path: Path, train: Path) -> Path:
    """A recipe file of its own, so the test does not depend on where the shipped recipes live."""
    recipe = tmp_path / "tfidf.yaml"
    recipe.write_text(f"model: tfidf\nout: {tmp_path / 'model'}\ndata:\n  train: {train}\n", encoding="utf-8")
    return recipe


# ------------------------------------------------------------------ labels moved by calibration


def test_from_probabilities_marks_only_the_labels_the_offsets_moved():
    probs = np.full((2, 7), 0.1)
    probs[0, NEUTRAL], probs[0, FEAR] = 0.25, 0.15  # Neutral by argmax; Fear after a +1 Fear offset
    probs[1, NEUTRAL], probs[1, FEAR] = 0.35, 0.05  # Neutral either way
    offsets = np.zeros(7)
    offsets[FEAR] = 1.0
    moved, kept = from_probabilities(["u1", "u2"], probs, offsets)
    assert (moved.label, moved.uncalibrated) == ("Fear", "Neutral")
    assert (kept.label, kept.uncalibrated) == ("Neutral", None)
    assert '"uncalibrated": "Neutral"' in moved.to_json() and "uncalibrated" not in kept.to_json()
    assert all(p.uncalibrated is None for p in from_probabilities(["u1", "u2"], probs))


def test_labels_follow_from_the_written_probabilities_so_relabelling_a_saved_file_agrees():
    """A resumed LLM run re-chooses calibrated labels from its file's probabilities; a fresh pass from its
    own: both must give the same labels, near ties included."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=200)
    probs[0] = [0.3000001, 0.3000004, 0.1, 0.1, 0.1, 0.05, 0.0499995]  # equal once written with 6 decimals
    offsets = dict(zip(LABELS, rng.normal(0, 0.5, 7), strict=True))
    offset_row = np.array([offsets[label] for label in LABELS])
    ids = [f"u{i}" for i in range(len(probs))]
    fresh = from_probabilities(ids, probs, offset_row)
    assert fresh[0].probs["Disgust"] == fresh[0].probs["Anger"] == 0.3
    assert [p.label for p in fresh] == [p.label for p in calibrated(from_probabilities(ids, probs), offsets)]
    assert [p.uncalibrated for p in fresh] == [p.uncalibrated for p in calibrated(from_probabilities(ids, probs), offsets)]
    assert from_probabilities(ids[:1], probs[:1])[0].label == "Disgust"  # the first of the written tie


def test_the_reader_takes_old_files_and_checks_the_new_field(tmp_path, capsys):
    old = tmp_path / "old.jsonl"
    old.write_text('{"id": "u1", "label": "Fear"}\n', encoding="utf-8")
    assert read_predictions(old)["u1"] == Prediction("u1", "Fear")
    new = tmp_path / "new.jsonl"
    write_predictions(new, [Prediction("u1", "Fear", uncalibrated="Neutral")])
    assert read_predictions(new)["u1"].uncalibrated == "Neutral"
    gold = m3ed_file(tmp_path / "gold.json", {"d": [("A", "你好", "Fear")]})
    for value in ('"Fear"', '"Joyous"', "3"):  # the label itself, not a label, not a string
        bad = tmp_path / "bad.jsonl"
        bad.write_text(f'{{"id": "d_1", "label": "Fear", "uncalibrated": {value}}}\n', encoding="utf-8")
        assert main(["evaluate", "--predictions", str(bad), "--gold", str(gold)]) == 2
        one_line_error(capsys, f"{bad}: line 1 (id d_1)", '"uncalibrated"')


def test_predict_marks_calibrated_labels_in_the_file_and_counts_them_in_its_summary(tmp_path, capsys):
    data = m3ed_file(tmp_path / "annotation.json", DIALOGUES)
    model = tmp_path / "model"
    assert main(["train", "--config", str(tfidf_recipe(tmp_path, data))]) == 0
    plain, moved = tmp_path / "plain.jsonl", tmp_path / "moved.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(data), "--out", str(plain)]) == 0
    assert "moved" not in capsys.readouterr().out
    offsets = {label: 20.0 if label == "Fear" else 0.0 for label in LABELS}  # every label becomes Fear
    store_calibration(model, offsets, {"family": "offsets"})
    assert main(["predict", "--model", str(model), "--input", str(data), "--out", str(moved)]) == 0
    before, after = read_predictions(plain), read_predictions(moved)
    count = sum(p.label != "Fear" for p in before.values())
    assert count > 0
    assert f"wrote 8 predictions to {moved}; {count} labels moved by the model's calibration" in capsys.readouterr().out
    for utt_id, prediction in after.items():
        assert prediction.label == "Fear"
        assert prediction.uncalibrated == (None if before[utt_id].label == "Fear" else before[utt_id].label)


def test_the_llm_summary_line_counts_moved_labels():
    summary = PredictSummary(Path("p.jsonl"), total=3, resumed=0, computed=3, seconds=1.0, moved=1)
    assert summary.describe().endswith("; 1 label moved by the model's calibration "
                                       '(each marked "uncalibrated": the label its probabilities alone give)')
    assert "moved" not in PredictSummary(Path("p.jsonl"), 3, 0, 3, 1.0).describe()


# ------------------------------------------------------------------------- honest fold counts


def test_cross_fitting_uses_no_more_folds_than_dialogues():
    rng = np.random.default_rng(0)
    log_probs = np.log(rng.dirichlet(np.ones(7), size=9))
    gold = rng.integers(0, 7, size=9)
    assert cross_fitted_gain(log_probs, gold, np.repeat(["a", "b", "c"], 3))["folds"] == 3
    assert cross_fitted_gain(log_probs, gold, np.arange(9))["folds"] == 5
    with pytest.raises(ValueError, match="two or more dialogues"):
        cross_fitted_gain(log_probs, gold, np.zeros(9))


def test_calibrate_reports_the_folds_it_used_on_a_file_of_three_dialogues(tmp_path, capsys):
    validation = m3ed_file(tmp_path / "annotation_validation.json", DIALOGUES)
    ids = [f"{d}_{i}" for d, rows in DIALOGUES.items() for i in range(1, len(rows) + 1)]
    probs = np.random.default_rng(1).dirichlet(np.ones(7), size=len(ids))
    preds = tmp_path / "val.jsonl"
    write_predictions(preds, from_probabilities(ids, probs))
    assert main(["calibrate", "--predictions", str(preds), "--validation", str(validation)]) == 0
    out = capsys.readouterr().out
    assert "(cross-fitted, 3 folds)" in out and "5 folds" not in out


# ------------------------------------------------------------------------------- the report


def test_the_report_says_one_utterance_and_draws_both_figures(tmp_path):
    gold = m3ed_file(tmp_path / "gold.json", {"d": [("A", "你好", "Fear"), ("B", "嗯", "Neutral"), ("A", "好", "Sad"),
                                                       ("B", "行", "Sad")]})
    preds = tmp_path / "p.jsonl"
    write_predictions(preds, [Prediction("d_1", "Neutral"), Prediction("d_2", "Neutral"),
                              Prediction("d_3", "Happy"), Prediction("d_4", "Happy")])
    assert main(["report", "--predictions", str(preds), "--gold", str(gold), "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "## Most confused label pairs\n" in report  # all shown: no count of more
    assert "gold Fear → predicted Neutral (1 utterance)" in report
    assert "gold Sad → predicted Happy (2 utterances)" in report
    assert (tmp_path / "r" / "per_class_f1.png").stat().st_size > 0 and (tmp_path / "r" / "confusion.png").is_file()
    # fewer utterances shown than confused: the heading says so; --pairs and --examples choose how many
    assert main(["report", "--predictions", str(preds), "--gold", str(gold), "--out", str(tmp_path / "r1"),
                 "--pairs", "1", "--examples", "1"]) == 0
    report = (tmp_path / "r1" / "report.md").read_text(encoding="utf-8")
    assert "gold Sad → predicted Happy (2 utterances; the first 1 shown, --examples N for more)" in report
    assert "## Most confused label pairs (the 1 most frequent of 2; --pairs N for more)" in report
    assert "gold Fear" not in report
    assert report.count("| d_") == 1


@pytest.mark.parametrize("value", ["0", "two"])
def test_the_reports_counts_must_be_whole_numbers_from_1(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["report", "--predictions", "p.jsonl", "--gold", "g.json", "--out", str(tmp_path / "r"), "--pairs", value])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "argument --pairs: expected" in err and not (tmp_path / "r").exists()


def test_a_report_without_errors_says_so(tmp_path):
    gold = m3ed_file(tmp_path / "gold.json", {"d": [("A", "你好", "Fear"), ("B", "嗯", "Neutral")]})
    preds = tmp_path / "p.jsonl"
    write_predictions(preds, [Prediction("d_1", "Fear"), Prediction("d_2", "Neutral")])
    assert main(["report", "--predictions", str(preds), "--gold", str(gold), "--out", str(tmp_path / "r")]) == 0
    assert "None: every utterance was predicted with its gold label." in (tmp_path / "r" / "report.md").read_text()


# ------------------------------------------------------------------------------- the cache


@pytest.mark.parametrize(
    ("erckit_cache", "xdg", "expected"),
    [
        ("/data/erckit-cache", "/xdg", "/data/erckit-cache"),  # erckit's own variable wins
        (None, "/xdg", "/xdg/erckit"),
        (None, "relative/xdg", "~/.cache/erckit"),  # the XDG spec: a relative path is ignored
        (None, None, "~/.cache/erckit"),
    ],
)
def test_the_cache_follows_erckit_cache_then_xdg_cache_home(monkeypatch, erckit_cache, xdg, expected):
    for name, value in (("ERCKIT_CACHE", erckit_cache), ("XDG_CACHE_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert default_cache_dir() == Path(expected).expanduser()


# -------------------------------------------------------------------------------- the lock

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from erckit.llm.resume import lock_partial
    with lock_partial(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.readline()
""")


def test_a_second_predict_into_the_same_out_is_refused_while_another_process_holds_the_lock(tmp_path, capsys):
    raw = m3ed_file(tmp_path / "annotation_test.json", {"d1": [("A", "你好", "Happy")]})
    out = tmp_path / "predictions.jsonl"
    partial = tmp_path / "predictions.jsonl.partial"
    partial.write_text('{"erckit_partial": 1, "settings": {}}\n', encoding="utf-8")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(partial)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # a running `erckit predict` in another process
        assert main(["predict", "--model", "nowhere/model", "--input", str(raw), "--template", "plain",
                     "--out", str(out)]) == 2
        one_line_error(capsys, str(partial), "in use by another erckit predict")
    finally:
        holder.communicate("\n", timeout=60)
    assert partial.read_text(encoding="utf-8") == '{"erckit_partial": 1, "settings": {}}\n' and not out.exists()
    assert not (tmp_path / "predictions.jsonl.partial.lock").exists()  # released and cleaned up
    with lock_partial(partial):  # free again
        pass
    assert partial.exists() and json.loads(partial.read_text(encoding="utf-8"))["erckit_partial"] == 1


def test_the_reports_example_table_keeps_one_row_per_example(tmp_path):
    """A pipe in a speaker or id, or a line break inside a quoted CSV text, stays inside its table cell."""
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID"
    gold = tmp_path / "gold.csv"
    gold.write_text(f'{header}\n1,"two\nlines | here",A|B,fear,negative,0,0\n2,ok,C,neutral,neutral,0,1\n',
                    encoding="utf-8")
    preds = tmp_path / "p.jsonl"
    write_predictions(preds, [Prediction("dia0_utt0", "Neutral"), Prediction("dia0_utt1", "Neutral")])
    assert main(["report", "--predictions", str(preds), "--gold", str(gold), "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "report.md").read_text(encoding="utf-8").splitlines()
    rows = report[report.index("| id | context (target in bold) |") + 2:]
    assert rows == [r"| dia0_utt0 | **A\|B: two ⏎ lines \| here** |"]  # one pair confused, once


def test_float32_probabilities_are_written_with_six_decimals(tmp_path):
    """The encoder's probabilities are float32: rounded as float64, written as 0.078948, not 0.0789479985833168."""
    probs = np.array([[0.0789479985833168, 0.1476230025291443, 0.1, 0.1, 0.3, 0.2, 0.0734289988875389]],
                     dtype=np.float32)
    prediction = from_probabilities(["u1"], probs)[0]
    assert prediction.probs["Disgust"] == 0.078948 and prediction.probs["Anger"] == 0.147623
    assert '"Disgust": 0.078948, "Anger": 0.147623' in prediction.to_json()
