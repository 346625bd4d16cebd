"""One LLM run, one scoring path: `erckit predict`, `calibrate`, `select`, `compare` and training's validation
score a dialogue-form run alike, with the run's own packing and batch settings (from its run record).

The run: the gemma-270m-dialogue recipe on the bundled sample (validation: its first five dialogues), with
a tiny Llama (real multilingual tokenizer) and `llm.pack_tokens=300`, `llm.eval_batch_size=3` (neither the
recipe's nor the default): the dialogues are then packed into several rows per batch. No real data needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import erckit.calibration
import erckit.llm.select
from conftest import SAMPLE
from erckit.cli import main
from erckit.labels import LABELS
from erckit.llm.scoring import softmax
from llm_tiny import save_tiny, tiny_model, tiny_tokenizer


class Scored(Exception):
    """Raised by a recording stand-in once a command has scored: nothing else of it is needed here."""


def stored_probs(path) -> np.ndarray:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return np.array([[row["probs"][label] for label in LABELS] for row in rows])


def rounded(probs: np.ndarray) -> np.ndarray:
    """As predictions.jsonl stores them (6 decimals)."""
    return np.array([[round(float(p), 6) for p in row] for row in probs])


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    """The sample's first five validation dialogues (they span several packed rows)."""
    data = json.loads((SAMPLE / "annotation_validation.json").read_text(encoding="utf-8"))
    show, dialogues = next(iter(data.items()))
    path = tmp_path_factory.mktemp("validation") / "annotation_validation.json"
    path.write_text(json.dumps({show: dict(list(dialogues.items())[:5])}, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, validation):
    folder = tmp_path_factory.mktemp("llm-run")
    tokenizer = tiny_tokenizer()
    base = save_tiny(folder / "tiny", tiny_model(tokenizer), tokenizer)
    out = folder / "run"
    assert main(["train", "--config", "gemma-270m-dialogue", f"out={out}",
                 f"data.train={SAMPLE / 'annotation_train.json'}", f"data.validation={validation}",
                 f"llm.model={base}", "llm.max_steps=2", "llm.eval_steps=2", "llm.eval_subset=0",
                 "llm.pack_tokens=300", "llm.eval_batch_size=3"]) == 0
    return out


def test_the_run_record_keeps_the_packing_and_batch_settings(run):
    record = json.loads((run / "best" / "erckit_llm.json").read_text())
    assert (record["pack_tokens"], record["eval_batch_size"]) == (300, 3)
    assert record["prompt"]["form"] == "dialogue"


def test_predict_calibrate_select_compare_and_training_score_alike(run, validation, tmp_path, monkeypatch):
    predicted = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(run), "--input", str(validation), "--out", str(predicted)]) == 0
    reference = stored_probs(predicted)
    assert reference.shape[1] == 7 and len(reference) > 3 * 5

    def record_calibration(probs, dialogues):
        seen["calibrate"] = probs
        raise Scored

    seen: dict[str, np.ndarray] = {}
    monkeypatch.setattr(erckit.calibration, "calibrate", record_calibration)
    with pytest.raises(Scored):
        main(["calibrate", "--model", str(run), "--validation", str(validation)])
    assert np.array_equal(rounded(seen["calibrate"]), reference)

    score = erckit.llm.select.score_dialogues
    monkeypatch.setattr(erckit.llm.select, "score_dialogues",
                        lambda *args, **kwargs: seen.setdefault("select", score(*args, **kwargs)))
    ranking = tmp_path / "ranking.json"
    assert main(["select", "--run", str(run), "--validation", str(validation), "--out", str(ranking)]) == 0
    assert np.array_equal(rounded(softmax(seen["select"])), reference)
    summary = json.loads((run / "erckit_model.json").read_text())["summary"]
    best = json.loads(ranking.read_text())["ranking"][0]["macro_f1"]
    assert round(best, 6) == summary["best_macro_f1"]  # training's validation (the trainer logs 6 decimals)

    config = {"out": str(tmp_path / "compare"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(validation), "methods": {"dialogue": {"model": str(run)}}}
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(tmp_path / "compare.yaml")]) == 0
    assert np.array_equal(stored_probs(tmp_path / "compare" / "dialogue" / "predictions_validation.jsonl"), reference)
