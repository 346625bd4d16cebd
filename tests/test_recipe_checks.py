"""Every recipe value is checked when the recipe loads: a bad one is refused in one line naming its key, with
exit code 2, before the run folder is created; so is a malformed or tagged YAML value (overrides and files)."""

from __future__ import annotations

import pytest

from conftest import SAMPLE_DATA
from erckit.cli import main

BAD = [  # (recipe, override, what the one line names)
    ("tfidf", "train.seed=-1", "train.seed"),
    ("tfidf", "train.seed=4294967296", "train.seed"),
    ("tfidf", "train.seed=1.5", "train.seed"),
    ("tfidf", "tfidf.ngram_min=0", "tfidf.ngram_min"),
    ("tfidf", "tfidf.ngram_max=0", "tfidf.ngram_max"),
    ("tfidf", "tfidf.max_features=0", "tfidf.max_features"),
    ("tfidf", "tfidf.c=-1", "tfidf.c"),
    ("tfidf", "tfidf.c=.nan", "tfidf.c"),
    ("tfidf", "tfidf.balanced=3", "tfidf.balanced"),
    ("tfidf", "data.format=xml", "data.format"),
    ("tfidf", "report_to=[wandb]", "report_to"),
    ("tfidf", "data.text_column=''", "data.text_column"),
    ("tfidf", "data.validation=''", "data.validation"),
    ("bert_bigru", "train.epochs=0", "train.epochs"),
    ("bert_bigru", "train.lr=-0.001", "train.lr"),
    ("bert_bigru", "train.head_lr=0", "train.head_lr"),
    ("bert_bigru", "train.weight_decay=-0.1", "train.weight_decay"),
    ("bert_bigru", "train.warmup_ratio=1", "train.warmup_ratio"),
    ("bert_bigru", "train.batch_dialogues=0", "train.batch_dialogues"),
    ("bert_bigru", "train.class_weight_power=-1", "train.class_weight_power"),
    ("bert_bigru", "train.patience=-1", "train.patience"),
    ("bert_bigru", "train.epochs=two", "train.epochs"),
    ("bert_bigru", "classifier.dropout=1.5", "classifier.dropout"),
    ("bert_bigru", "classifier.gru_hidden=0", "classifier.gru_hidden"),
    ("bert_bigru", "encoder.max_length=1", "encoder.max_length"),
    ("bert_bigru", "encoder.context=turn", "encoder.context"),
    ("bert_bigru", "encoder.speaker=x", "encoder.speaker"),
    ("bert_bigru", "encoder.freeze_layers=-1", "encoder.freeze_layers"),
    ("bert_bigru", "encoder.dialogue_tokens=0", "encoder.dialogue_tokens"),
    ("bert_bigru", "encoder.freeze_embeddings=3", "encoder.freeze_embeddings"),
    ("bert_bigru", "encoder.trust_remote_code=1", "encoder.trust_remote_code"),
    ("gemma-270m-lora", "train.seed=-1", "train.seed"),
    ("gemma-270m-lora", "llm.prompt.window=0", "llm.prompt.window"),
    ("gemma-270m-lora", "llm.prompt.window=-3", "llm.prompt.window"),
    ("gemma-270m-lora", "llm.prompt.form=x", "llm.prompt.form"),
    ("gemma-270m-lora", "llm.prompt.same_speaker=-1", "llm.prompt.same_speaker"),
    ("gemma-270m-lora", "llm.lora.rank=0", "llm.lora.rank"),
    ("gemma-270m-lora", "llm.lora.dropout=1.5", "llm.lora.dropout"),
    ("gemma-270m-lora", "llm.max_length=1", "llm.max_length"),
    ("gemma-270m-lora", "llm.pack_tokens=0", "llm.pack_tokens"),
    ("gemma-270m-lora", "llm.epochs=0", "llm.epochs"),
    ("gemma-270m-lora", "llm.max_steps=0", "llm.max_steps"),
    ("gemma-270m-lora", "llm.lr=-1", "llm.lr"),
    ("gemma-270m-lora", "llm.warmup_ratio=2", "llm.warmup_ratio"),
    ("gemma-270m-lora", "llm.batch_size=0", "llm.batch_size"),
    ("gemma-270m-lora", "llm.eval_subset=-1", "llm.eval_subset"),
    ("gemma-270m-lora", "llm.save_total_limit=0", "llm.save_total_limit"),
    ("gemma-270m-lora", "llm.finetuning=x", "llm.finetuning"),
    ("gemma-270m-lora", "llm.precision=x", "llm.precision"),
    ("gemma-270m-lora", "llm.template=nope", "llm.template"),
    ("gemma-270m-lora", "llm.scheduler=nope", "llm.scheduler"),
    ("gemma-270m-lora", "llm.trust_remote_code=2", "llm.trust_remote_code"),
    ("gemma-270m-lora", "llm.deepspeed=''", "llm.deepspeed"),
    # malformed or tagged YAML values: the override is named
    ("tfidf", "train.seed=!!python/object/apply:os.system [echo]", "train.seed=!!python"),
    ("tfidf", "train.seed=[1,", "train.seed=[1,"),
    ("tfidf", "tfidf.c=!!float x", "tfidf.c=!!float x"),
    ("tfidf", "train.seed=!!timestamp q", "train.seed=!!timestamp q"),
    ("tfidf", "a=b: c: d", "a=b: c: d"),
]


@pytest.mark.parametrize(("recipe", "override", "key"), BAD, ids=[b[1] for b in BAD])
def test_a_bad_recipe_value_is_refused_before_anything_is_written(recipe, override, key, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", recipe, f"out={out}", *SAMPLE_DATA, override]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and key in error, error
    assert not out.exists()


@pytest.mark.parametrize("content", [
    "model: tfidf\ntrain:\n  seed: !!python/object/apply:os.system [echo hi]\n",
    "model: tfidf\ntfidf: {c: !!float x}\n",
    "model: tfidf\ntrain: {seed: !!timestamp q}\n",
    "model: tfidf\ntrain: {seed: [1,\n",
])
def test_a_recipe_file_with_a_malformed_or_tagged_value_is_refused_in_one_line(content, tmp_path, capsys):
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "run"
    recipe.write_text(content, encoding="utf-8")
    assert main(["train", "--config", str(recipe), f"out={out}", *SAMPLE_DATA]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(recipe) in error and "malformed YAML" in error, error
    assert not out.exists()


def test_a_tagged_override_of_a_comparison_is_refused_in_one_line(tmp_path, capsys):
    config = tmp_path / "compare.yaml"
    config.write_text(f"out: {tmp_path / 'c'}\ntrain: {SAMPLE_DATA[0].split('=')[1]}\n"
                      "methods: {tfidf: {recipe: tfidf}}\n", encoding="utf-8")
    assert main(["compare", "--config", str(config), "out=!!python/object/apply:os.system [echo]"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "override 'out=!!python" in error, error
    assert not (tmp_path / "c").exists()
