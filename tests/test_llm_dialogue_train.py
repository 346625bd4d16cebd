"""The dialogue form through the real training and selection paths, on a tiny LM and a real BMELD slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from erckit.cli import main
from erckit.config import ConfigError, load_config
from erckit.labels import LABELS, class_weights
from erckit.llm.train import train_llm
from test_llm_train import Snapshot, build_setup

pytestmark = pytest.mark.needs_data


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return build_setup(tmp_path_factory.mktemp("dialogue"), extra_chars="0123456789")  # turns are numbered


def recipe(setup: dict, out: Path, *extra: str):
    return load_config(None, [
        "model=llm", f"out={out}", f"data.train={setup['train']}", f"data.validation={setup['dev']}",
        f"llm.model={setup['base']}", "llm.template=plain", "llm.lora.rank=8", "llm.lora.alpha=16",
        "llm.prompt.form=dialogue", "llm.pack_tokens=1024", "llm.max_length=1024", "llm.max_steps=12",
        "llm.eval_steps=4", "llm.lr=0.01", "llm.batch_size=1", "llm.scheduler=constant", "llm.logging_steps=2",
        *extra,
    ])


@pytest.mark.parametrize("question", [pytest.param("number", marks=pytest.mark.integration), "quoted"])
def test_dialogue_form_trains_selects_and_records_its_form(setup, tmp_path, question):
    snapshot = Snapshot()
    run = tmp_path / "run"
    config = recipe(setup, run, "llm.class_weight_power=0.5", f"llm.prompt.question={question}")
    summary = train_llm(config, setup["train_dialogues"], setup["dev_dialogues"], run, [snapshot])
    assert any(not torch.equal(snapshot.before[n], snapshot.after[n]) for n in snapshot.before if "lora_B" in n)
    losses = [h["loss"] for h in summary["history"] if "loss" in h]
    assert losses[-1] < losses[0]
    evals = {h["step"]: h["eval_macro_f1"] for h in summary["history"] if "eval_macro_f1" in h}
    assert sorted(evals) == [4, 8, 12]
    assert summary["validation_utterances"] == sum(len(d) for d in setup["dev_dialogues"])
    record = json.loads((run / "best" / "erckit_llm.json").read_text())
    assert record["prompt"]["form"] == "dialogue" and record["prompt"]["question"] == question
    # `erckit select` reads the form from the record and scores each checkpoint as training did
    assert main(["select", "--run", str(run), "--validation", str(setup["dev"]), "--out", str(tmp_path / "s.json")]) == 0
    ranking = json.loads((tmp_path / "s.json").read_text())["ranking"]
    for row in ranking:
        step = int(Path(row["checkpoint"]).name.split("-")[-1])
        assert row["macro_f1"] == pytest.approx(evals[step], abs=1e-6)


def test_class_weights_follow_inverse_frequency() -> None:
    labels = ["Neutral"] * 8 + ["Fear"] * 2 + ["Happy"] * 4 + ["Disgust", "Anger", "Sad", "Surprise"]
    weights = class_weights(labels, 1.0)
    assert weights["Fear"] == pytest.approx(4 * weights["Neutral"])
    assert weights["Happy"] == pytest.approx(2 * weights["Neutral"])
    assert sum(weights[label] for label in labels) == pytest.approx(len(labels))  # the average example weighs 1
    assert set(class_weights(labels, 0.0).values()) == {1.0}
    assert class_weights(labels, 0.5)["Fear"] == pytest.approx(2 * class_weights(labels, 0.5)["Neutral"])


@pytest.mark.parametrize("override, message", [
    ("llm.prompt.form=dialog", "llm.prompt.form must be one of"),
    ("llm.prompt.variant=speaker", "window form only"),
    ("llm.prompt.same_speaker=2", "same-speaker task exists in the window form only"),
    ("llm.pack_tokens=0", "llm.pack_tokens"),
    ("llm.prompt.question=both", "llm.prompt.question must be one of"),
    ("llm.prompt.form=window llm.prompt.question=quoted", "llm.prompt.question 'quoted' exists in the dialogue form only"),
])
def test_dialogue_form_settings_are_refused_when_the_recipe_loads(setup, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        recipe(setup, tmp_path / "bad", *override.split())
    assert not (tmp_path / "bad").exists()


def test_window_form_answer_loss_weighs_each_example_by_its_class_weight(setup):
    """The window form's weighted loss = sum over answers of weight x token cross-entropy / sum of weights,
    from separate unpadded forward passes; class_weight_power=0 gives the plain token mean."""
    from erckit.llm.chat import get_template
    from erckit.llm.loading import load_model
    from erckit.llm.train import WindowCollator, answer_loss, tokenize
    from erckit.prompts import PromptConfig, emotion_examples
    from llm_tiny import brute_force_log_prob

    model, tokenizer = load_model(str(setup["base"]))
    template = get_template("plain")
    examples = emotion_examples(setup["train_dialogues"][:2], PromptConfig(language="zh", window=3))[:6]
    weights = class_weights([u.label for d in setup["train_dialogues"] for u in d.utterances], 1.0)
    assert len({weights[e.answer] for e in examples}) > 1  # the check below tells weighted from unweighted
    for chosen in (weights, None):
        rows = tokenize(examples, tokenizer, template, 512, chosen).to_list()
        with torch.no_grad():
            got = float(answer_loss(model, WindowCollator(tokenizer)(rows)))
        total = norm = 0.0
        for row, example in zip(rows, examples, strict=True):
            answer_tokens = sum(label != -100 for label in row["labels"])
            total -= row["weight"] * brute_force_log_prob(model, tokenizer, template, example.prompt, example.answer)
            norm += row["weight"] * answer_tokens
        assert got == pytest.approx(total / norm, abs=1e-4)
        assert {row["weight"] for row in rows} == ({weights[e.answer] for e in examples} if chosen else {1.0})


def test_cli_predicts_a_dialogue_form_run_as_training_scored_it_by_scoring_and_generation(setup, tmp_path, capsys):
    from erckit.labels import parse_answer
    from erckit.llm.backends import DialogueForm
    from erckit.llm.chat import get_template
    from erckit.llm.dialogue_form import dialogue_log_probs
    from erckit.llm.engines import EngineOptions, load_engine
    from erckit.llm.items import items_from_dialogues
    from erckit.llm.loading import load_model
    from erckit.llm.record import load_run_record
    from erckit.llm.run import open_run
    from erckit.llm.scoring import softmax

    run = tmp_path / "run"
    assert main(["train", "--config", "gemma-270m-dialogue", f"out={run}", f"data.train={setup['train']}",
                 f"data.validation={setup['dev']}", f"llm.model={setup['base']}", "llm.max_steps=4",
                 "llm.eval_steps=4", "llm.lr=0.01", "llm.pack_tokens=1024"]) == 0
    preds = tmp_path / "p.jsonl"
    # window-form prompts (erckit prepare's default) are not what this run learned to read: refused, nothing written
    assert main(["prepare", "--test", str(setup["dev"]), "--out", str(tmp_path / "window")]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(run), "--prepared", str(tmp_path / "window" / "data_test.json"),
                 "--out", str(preds)]) == 2
    assert "was prepared with prompt form 'window', and the run reads 'dialogue'" in capsys.readouterr().err
    assert not preds.exists()
    assert main(["predict", "--model", str(run), "--input", str(setup["dev"]), "--out", str(preds),
                 "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [u.id for d in setup["dev_dialogues"] for u in d.utterances]
    model, tokenizer = load_model(str(setup["base"]), adapter=str(run / "best"))
    prompts = load_run_record(str(run)).prompt  # the recipe's prompt settings, as training recorded them
    assert prompts.form == "dialogue" and prompts.language == "zh"
    expected = softmax(dialogue_log_probs(model, tokenizer, setup["dev_dialogues"], get_template("plain"), prompts,
                                          max_length=768, progress=False))
    got = [[r["probs"][label] for label in LABELS] for r in rows]
    assert abs(expected - got).max() <= 1e-5
    assert [r["label"] for r in rows] == [LABELS[i] for i in expected.argmax(axis=1)]
    # prepared with the run's own prompt settings, each utterance's separate sequence scores as the packed form
    assert main(["prepare", "--test", str(setup["dev"]), "--out", str(tmp_path / "same"), "--form", "dialogue",
                 "--question", "quoted"]) == 0
    from_prepared = tmp_path / "prepared.jsonl"
    assert main(["predict", "--model", str(run), "--prepared", str(tmp_path / "same" / "data_test.json"),
                 "--out", str(from_prepared)]) == 0
    again = {json.loads(line)["id"]: json.loads(line)["probs"] for line in from_prepared.read_text().splitlines()}
    assert abs(expected - [[again[r["id"]][label] for label in LABELS] for r in rows]).max() <= 1e-5
    # generation in the dialogue form: one separate sequence per utterance; its label scores (which resolve
    # the unparsed answers) equal the packed form's
    generated = tmp_path / "g.jsonl"
    assert main(["predict", "--model", str(run), "--input", str(setup["dev"]), "--out", str(generated),
                 "--backend", "generate", "--unparsed", "score", "--max-new-tokens", "4"]) == 0
    rows = [json.loads(line) for line in generated.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [u.id for d in setup["dev_dialogues"] for u in d.utterances]
    for row, want in zip(rows, expected, strict=True):
        assert row["raw"] is not None
        if parse_answer(row["raw"]) is not None:
            assert row["label"] == parse_answer(row["raw"]) and row["probs"] is None
        else:
            assert abs(want - [row["probs"][label] for label in LABELS]).max() <= 1e-5
    engine = load_engine(open_run(str(run)), "generate", EngineOptions())
    backend = engine.backend(DialogueForm(prompts, setup["dev_dialogues"]))
    items = items_from_dialogues(setup["dev_dialogues"], prompts)
    assert abs(softmax(backend.log_probs(items)) - expected).max() <= 1e-5
