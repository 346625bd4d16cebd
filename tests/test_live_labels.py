"""Live (past-only) labels: each dialogue's last turn scored on its own equals the last label of the whole
dialogue, for an LLM in the window form (one prompt for the last turn, not one a turn), in the dialogue form,
and a fusion of the two; the Python API's `label_past_only` and the batcher's live requests go through it.

The runs: the gemma recipes on the bundled sample with a tiny Llama (real multilingual tokenizer), two steps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

import erckit
from conftest import REFERENCE_DIALOGUE, SAMPLE
from erckit.api import to_dialogues
from erckit.cli import main
from erckit.data import prefixes
from erckit.llm.engines import load_engine, score_dialogues
from erckit.llm.run import open_run
from erckit.models import load
from llm_tiny import save_tiny, tiny_model, tiny_tokenizer

VALIDATION = SAMPLE / "annotation_validation.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A window-form run, a dialogue-form run and their fusion (weights given)."""
    folder = tmp_path_factory.mktemp("live")
    tokenizer = tiny_tokenizer()
    base = save_tiny(folder / "tiny", tiny_model(tokenizer), tokenizer)
    data = [f"data.train={SAMPLE / 'annotation_train.json'}", f"data.validation={VALIDATION}"]
    for form, recipe in (("window", "gemma-270m-lora"), ("dialogue", "gemma-270m-dialogue")):
        assert main(["train", "--config", recipe, f"out={folder / form}", *data, f"llm.model={base}",
                     "llm.max_steps=2", "llm.eval_steps=2", "llm.eval_subset=0", "llm.prompt.window=3"]) == 0
    assert main(["ensemble", "--models", str(folder / "window"), str(folder / "dialogue"), "--weights", "1", "2",
                 "--out", str(folder / "fusion")]) == 0
    return {name: folder / name for name in ("window", "dialogue", "fusion")}


def reference_prefixes() -> list:
    return prefixes(to_dialogues([REFERENCE_DIALOGUE])[0])


@pytest.mark.parametrize("name", ["window", "dialogue", "fusion"])
def test_the_last_turn_alone_is_labelled_as_in_the_whole_dialogue(runs, name):
    predictor = load(runs[name])
    dialogues = reference_prefixes()
    last = predictor.last_probabilities(dialogues)
    assert last.shape == (len(dialogues), 7)
    for row, dialogue in zip(last, dialogues, strict=True):
        np.testing.assert_allclose(row, predictor.probabilities([dialogue])[-1], atol=1e-5)
    assert [p.id for p in predictor.predict_last(dialogues)] == [d.utterances[-1].id for d in dialogues]


class CountingEngine:
    """An engine that records the items its backends score."""

    def __init__(self, engine) -> None:
        self.engine, self.scored = engine, []

    def backend(self, form):
        backend = self.engine.backend(form)

        def log_probs(items):
            self.scored.extend(item.id for item in items)
            return backend.log_probs(items)

        return replace(backend, log_probs=log_probs)


def test_the_window_form_scores_one_prompt_per_dialogue_for_its_last_turn(runs):
    run = open_run(str(runs["window"]))
    engine = CountingEngine(load_engine(run))
    dialogues = reference_prefixes()
    logp = score_dialogues(engine, dialogues, run.record.prompt, 4, last_only=True)
    assert logp.shape == (len(dialogues), 7)
    assert sorted(engine.scored) == sorted(d.utterances[-1].id for d in dialogues)  # 11 prompts, not 66
    assert sum(len(d) for d in dialogues) == 66


def test_past_only_labels_of_an_llm_equal_the_last_turn_of_each_prefix(runs):
    model = erckit.load(runs["window"])
    live = model.label_past_only(REFERENCE_DIALOGUE)
    assert [p.id for p in live] == [f"1_{k}" for k in range(1, len(REFERENCE_DIALOGUE) + 1)]
    for k, got in enumerate(live, start=1):
        want = model.label([REFERENCE_DIALOGUE[:k]])[-1]
        assert got.label == want.label
        assert list(got.probs.values()) == pytest.approx(list(want.probs.values()), abs=2e-6)


def test_the_batcher_labels_waiting_live_and_whole_requests_in_one_call_each(runs):
    from erckit.predictor import Predictor
    from erckit.serve.batcher import Batcher

    real = load(runs["dialogue"])
    gate, calls = threading.Event(), []

    def score(dialogues, progress):
        calls.append(("whole", len(dialogues)))
        gate.wait(30)  # the first call holds the model while the others queue
        return real.probabilities(dialogues)

    def score_last(dialogues):
        calls.append(("last", len(dialogues)))
        return real.last_probabilities(dialogues)

    batcher = Batcher(Predictor(real.folder, real.kind, score, real.offsets, score_last=score_last), max_utterances=256)
    dialogues = reference_prefixes()
    first = batcher.submit(dialogues[:1])
    while not calls:
        time.sleep(0.01)
    live = [batcher.submit([d], last_only=True) for d in dialogues[1:4]]
    whole = [batcher.submit([d]) for d in dialogues[4:6]]
    gate.set()
    assert first.result(30) == real.predict(dialogues[:1])
    for future, dialogue in zip(live, dialogues[1:4], strict=True):
        (got,) = future.result(30)
        (want,) = real.predict_last([dialogue])
        assert got.id == want.id == dialogue.utterances[-1].id and got.label == want.label
        assert list(got.probs.values()) == pytest.approx(list(want.probs.values()), abs=2e-6)
    for future, dialogue in zip(whole, dialogues[4:6], strict=True):
        assert [p.id for p in future.result(30)] == [u.id for u in dialogue.utterances]
    assert calls == [("whole", 1), ("whole", 2), ("last", 3)] and batcher.batches == 3
