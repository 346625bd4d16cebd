"""The encoder's two ways to read a dialogue: each utterance alone, or the dialogue's turns together
(chunked when long), each utterance pooled from its own tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from conftest import SAMPLE
from erckit.cli import main
from erckit.config import ConfigError, EncoderConfig, load_config
from erckit.data import Dialogue, Utterance
from erckit.encoder.model import encode_batch, utterance_texts
from erckit.encoder.packaged import tokenizer_json
from erckit.formats import read_dialogues
from erckit.models import load, read_model_info


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer, 32-wide BERT with the real multilingual-e5 tokenizer (folder, model, tokenizer)."""
    folder = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json()), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
    )
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id)
    model = BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def long_dialogue(turns: int) -> Dialogue:
    texts = ["我们明天去看电影吧", "不行，我要加班到很晚", "那后天呢？后天是周末", "好吧，后天下午三点见", "你真的会来吗"]
    return Dialogue("long", tuple(Utterance(f"long_{i}", "AB"[i % 2], f"{texts[i % 5]}（第{i}次）") for i in range(turns)))


def _vectors(model, inputs) -> np.ndarray:
    with torch.inference_mode():
        hidden = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    return (inputs["pool"] @ hidden.flatten(0, 1)).numpy()


def test_utterance_context_is_the_mean_of_each_query_row(tiny):
    """context: utterance encodes and pools exactly as the per-utterance model always has."""
    _, model, tokenizer = tiny
    dialogues = read_dialogues(SAMPLE / "annotation_test.json")[:3]
    config = EncoderConfig(max_length=24, context="utterance")
    inputs, lengths = encode_batch(tokenizer, dialogues, config)
    texts = [f"query: {t}" for d in dialogues for t in utterance_texts(d, "name")]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    assert lengths == [len(d) for d in dialogues]
    np.testing.assert_allclose(_vectors(model, inputs), expected, atol=1e-5)


@pytest.mark.parametrize("turns, budget", [(6, 512), (40, 136)])
def test_dialogue_context_pools_each_turn_from_its_own_tokens_in_a_shared_pass(tiny, turns, budget):
    """Brute force: each utterance's vector is the mean of the hidden states at its own tokens, in the row (chunk)
    that holds the turns around it, after "<s> query:"; long dialogues are cut into several rows."""
    _, model, tokenizer = tiny
    dialogue = long_dialogue(turns)
    config = EncoderConfig(max_length=16, context="dialogue", dialogue_tokens=budget)
    inputs, _ = encode_batch(tokenizer, [dialogue], config)
    rows = inputs["input_ids"].shape[0]
    assert (rows > 1) == (turns == 40)
    with torch.inference_mode():
        hidden = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    texts = utterance_texts(dialogue, "name")
    turn_ids = [tokenizer(t, add_special_tokens=False, truncation=True, max_length=16)["input_ids"] for t in texts]
    sep, cls = tokenizer.sep_token_id, tokenizer.cls_token_id
    vectors = _vectors(model, inputs)
    for index, ids in enumerate(turn_ids):
        found = []
        for r in range(rows):  # the turn's tokens, framed by </s> (or the prefix) and </s>, in some row
            row = inputs["input_ids"][r][inputs["attention_mask"][r].bool()].tolist()
            assert row[0] == cls and row[-1] == sep and len(row) <= budget
            found += [(r, s) for s in range(len(row) - len(ids)) if row[s : s + len(ids)] == ids and row[s + len(ids)] == sep]
        means = [hidden[r, s : s + len(ids)].mean(0).numpy() for r, s in found]
        assert any(np.allclose(vectors[index], m, atol=1e-5) for m in means), f"turn {index}"
        if rows > 1:  # pooled from a row where it has context on both sides, unless at an end
            r, s = next((r, s) for r, s in found if np.allclose(vectors[index], hidden[r, s : s + len(ids)].mean(0).numpy(), atol=1e-5))
            row_length = int(inputs["attention_mask"][r].sum())
            if 0 < index < turns - 1:
                assert s > 3 and s + len(ids) + 1 < row_length


def test_dialogue_tokens_must_leave_room_for_context():
    with pytest.raises(ConfigError, match="encoder.dialogue_tokens"):
        EncoderConfig(max_length=48, dialogue_tokens=100, context="dialogue")
    assert EncoderConfig(max_length=128, context="utterance").dialogue_tokens == 512  # not read: not checked
    with pytest.raises(ConfigError, match="encoder.context"):
        EncoderConfig(context="window")


@pytest.mark.integration  # trains through the CLI (15 s)
def test_a_dialogue_reading_model_trains_predicts_and_reloads_through_the_cli(tiny, tmp_path):
    folder, _, _ = tiny
    out = tmp_path / "model"
    recipe = [f"data.train={SAMPLE / 'annotation_train.json'}", f"data.validation={SAMPLE / 'annotation_validation.json'}",
              f"out={out}", f"encoder.name={folder}", "encoder.context=dialogue",
              "encoder.max_length=24", "encoder.dialogue_tokens=200", "encoder.freeze_layers=0",
              "classifier.gru_hidden=16", "train.epochs=1", "train.patience=0"]
    assert main(["train", "--config", "bert_bigru", *recipe]) == 0
    assert read_model_info(out)["config"]["encoder"]["context"] == "dialogue"
    assert main(["predict", "--model", str(out), "--input", str(SAMPLE / "annotation_test.json"),
                 "--out", str(tmp_path / "p.jsonl")]) == 0
    lines = (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()
    dialogues = read_dialogues(SAMPLE / "annotation_test.json")
    assert len(lines) == sum(len(d) for d in dialogues) == 96
    probs = load(out).probabilities(dialogues)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_a_dialogue_longer_than_the_encoder_is_refused_by_its_positions(tiny, tmp_path):
    folder, _, _ = tiny
    config = load_config("bert_bigru", [f"encoder.name={folder}", "encoder.context=dialogue",
                                                     "encoder.dialogue_tokens=300", f"out={tmp_path / 'm'}"])
    from erckit.encoder.model import check_positions, load_pretrained

    encoder, _ = load_pretrained(config.encoder)
    with pytest.raises(ConfigError, match="encoder.dialogue_tokens.*256"):
        check_positions(encoder, config.encoder)
