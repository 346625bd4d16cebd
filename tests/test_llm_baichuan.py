"""A Baichuan2-like model with its own code (tests/baichuan_like, loaded with trust_remote_code).

Its attention takes one new token per cached step only, it keeps legacy tuple caches, a fused W_pack,
a NormHead and a tuple `gradient_checkpointing`, and its sentencepiece tokenizer fails to construct on
current transformers: label scoring, generation, training, selection, merging and prediction must all
work on it, with the same log-probabilities as a brute-force reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from baichuan_tiny import build_baichuan_like
from conftest import BMELD
from erckit.cli import main
from erckit.formats import read_dialogues
from erckit.formats.jsonl import dump
from erckit.labels import LABELS
from erckit.llm.chat import encode_pair, get_template
from erckit.llm.loading import load_causal_lm, load_model, load_tokenizer
from erckit.llm.scoring import one_token_steps
from erckit.llm.settings import Decoding
from erckit.prompts import TEMPLATES, PromptConfig, emotion_examples
from llm_calls import generate_answers, label_log_probs

pytestmark = pytest.mark.needs_data  # trains on real BMELD slices

BAICHUAN = get_template("baichuan2")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("baichuan")
    train = read_dialogues(BMELD / "train_sent_emo.csv")[:10]
    dev = read_dialogues(BMELD / "dev_sent_emo.csv")[:2]
    (folder / "train.jsonl").write_text(dump(train), encoding="utf-8")
    (folder / "dev.jsonl").write_text(dump(dev), encoding="utf-8")
    texts = [u.text for d in train + dev for u in d.utterances]
    texts += ["".join(str(v) for v in TEMPLATES["zh"].__dict__.values()), " ".join(LABELS)] * 3
    base = build_baichuan_like(folder / "tiny-baichuan", texts)
    return {"folder": folder, "base": base, "train": folder / "train.jsonl", "dev": folder / "dev.jsonl",
            "dev_dialogues": dev}


@pytest.fixture(scope="module")
def loaded(data):
    return load_model(str(data["base"]), trust_remote_code=True)


@torch.no_grad()
def reference_log_prob(model, tokenizer, prompt: str, answer: str) -> float:
    """log p(answer | prompt): one unpadded forward pass over context + answer, no cache."""
    context, target = encode_pair(BAICHUAN, prompt, answer, tokenizer)
    logits = model(input_ids=torch.tensor([context + target])).logits[0, len(context) - 1 : -1]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return float(sum(log_probs[j, token] for j, token in enumerate(target)))


def test_the_tokenizer_fails_as_baichuans_does_and_loads_with_the_workaround(data):
    import sentencepiece

    with pytest.raises((AttributeError, TypeError)):  # its __init__ reads sp_model before loading it
        AutoTokenizer.from_pretrained(data["base"], trust_remote_code=True)
    tokenizer = load_tokenizer(str(data["base"]), trust_remote_code=True)
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(data["base"] / "tokenizer.model"))
    text = "<reserved_106>你笑什么？我在问你话呢<reserved_107>"
    assert tokenizer(text)["input_ids"] == [1, *pieces.encode(text)]  # BOS + the sentencepiece model's own ids
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == 0


def test_without_trust_remote_code_it_does_not_load(data):
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_tokenizer(str(data["base"]))


def test_the_model_takes_one_token_per_cached_step_and_breaks_generate(data, loaded):
    model, _ = loaded
    assert one_token_steps(model)
    out = model(input_ids=torch.tensor([[1, 5, 6, 7]]), use_cache=True)
    assert isinstance(out.past_key_values, tuple)
    with pytest.raises(RuntimeError, match="size of tensor"):  # two tokens on top of a cache
        model(input_ids=torch.tensor([[8, 9]]), past_key_values=out.past_key_values, use_cache=True)
    with pytest.raises(TypeError, match="DynamicCache"):  # HF generate hands it a cache object
        model.generate(input_ids=torch.tensor([[1, 5, 6, 7]]), max_new_tokens=2)


def test_label_scores_equal_the_brute_force_reference(data, loaded):
    model, tokenizer = loaded
    prompts = [e.prompt for e in emotion_examples(data["dev_dialogues"], PromptConfig("zh", window=3))][:6]
    assert len({len(tokenizer(p)["input_ids"]) for p in prompts}) > 1  # batches are left-padded
    got = label_log_probs(model, tokenizer, prompts, BAICHUAN, batch_size=4)
    expected = np.array([[reference_log_prob(model, tokenizer, p, a) for a in LABELS] for p in prompts])
    assert max(len(encode_pair(BAICHUAN, "", a, tokenizer)[1]) for a in LABELS) > 2  # several cached steps
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_generation_equals_greedy_decoding_without_a_cache(data, loaded):
    model, tokenizer = loaded
    prompts = [e.prompt for e in emotion_examples(data["dev_dialogues"], PromptConfig("zh", window=2))][:3]
    decoding = Decoding(max_new_tokens=5, repetition_penalty=1.3)
    answers = generate_answers(model, tokenizer, prompts, BAICHUAN, decoding, batch_size=3)
    for prompt, answer in zip(prompts, answers, strict=True):
        ids = encode_pair(BAICHUAN, prompt, "", tokenizer)[0]
        new: list[int] = []
        with torch.no_grad():
            for _ in range(decoding.max_new_tokens):
                logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1].clone()
                seen = torch.tensor(ids + new)
                picked = logits[seen]
                logits[seen] = torch.where(picked < 0, picked * 1.3, picked / 1.3)
                token = int(logits.argmax())
                if token == tokenizer.eos_token_id:
                    break
                new.append(token)
        assert answer == tokenizer.decode(new, skip_special_tokens=True).strip()


def test_its_tuple_gradient_checkpointing_is_not_switched_on(data):
    plain = AutoModelForCausalLM.from_pretrained(data["base"], trust_remote_code=True)
    assert plain.model.gradient_checkpointing  # as Baichuan2 loads: reentrant checkpointing, always
    model = load_causal_lm(str(data["base"]), trust_remote_code=True)
    assert model.model.gradient_checkpointing is False and not model.is_activation_checkpointing


def test_validation_scores_with_the_normalised_head_and_leaves_its_weight_as_it_was(data):
    from peft import LoraConfig, get_peft_model

    from erckit.llm.train import scoring_mode

    model = get_peft_model(load_causal_lm(str(data["base"]), trust_remote_code=True),
                           LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    head = model.get_base_model().get_output_embeddings()
    with torch.no_grad():
        head.weight.mul_(3.0)  # rows far from unit norm, as a real head's are
    raw = head.weight.detach().clone()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        model.train()
        normalised = model(input_ids=ids).logits
        with scoring_mode(model):
            assert not model.base_model.model.model.training and head.training
            for _ in range(2):  # the second call is where Baichuan2's eval mode would use the raw weight
                torch.testing.assert_close(model(input_ids=ids).logits, normalised)
    assert model.training  # as it was
    torch.testing.assert_close(head.weight, raw)  # never normalised in place: nothing a gathered copy could lose
    model.eval()  # what the same model does in plain eval mode
    with torch.no_grad():
        model(input_ids=ids)
    assert not torch.allclose(head.weight, raw)


@pytest.mark.integration
def test_trains_selects_merges_and_predicts_through_the_cli(data, tmp_path, capsys):
    run, merged = tmp_path / "run", tmp_path / "merged"
    overrides = [
        "model=llm", f"out={run}", f"data.train={data['train']}", f"data.validation={data['dev']}",
        f"llm.model={data['base']}", "llm.template=baichuan2", "llm.trust_remote_code=true",
        "llm.lora.rank=4", "llm.lora.alpha=8", "llm.prompt.window=3", "llm.prompt.language=zh", "llm.max_length=160",
        "llm.max_steps=6", "llm.eval_steps=3", "llm.lr=0.01", "llm.batch_size=8", "llm.eval_batch_size=16",
        "llm.scheduler=constant", "llm.logging_steps=3",
    ]
    assert main(["train", "--config", "gemma-270m-lora", *overrides]) == 0
    adapter = json.loads((run / "best" / "adapter_config.json").read_text())
    targets = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert {"W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"} <= targets and "lm_head" not in targets
    select = ["select", "--run", str(run), "--validation", str(data["dev"]), "--out", str(tmp_path / "s.json")]
    assert main(select) == 2  # the run's record asks for its code: the user's word is needed to load it
    assert main([*select, "--trust-remote-code"]) == 0
    ranking = json.loads((tmp_path / "s.json").read_text())["ranking"]
    assert sorted(Path(r["checkpoint"]).name for r in ranking) == ["checkpoint-3", "checkpoint-6"]
    info = json.loads((run / "erckit_model.json").read_text())
    best = max(ranking, key=lambda r: (r["macro_f1"], -r["order"]))
    assert Path(info["summary"]["best_checkpoint"]).name == Path(best["checkpoint"]).name
    assert info["summary"]["best_macro_f1"] == pytest.approx(best["macro_f1"], abs=1e-6)  # select agrees with training
    assert main(["merge", "--adapter", str(run), "--out", str(merged), "--trust-remote-code"]) == 0
    preds = tmp_path / "predictions.jsonl"
    capsys.readouterr()
    predict = ["predict", "--model", str(merged), "--input", str(data["dev"]), "--out", str(preds)]
    assert main(predict) == 2 and "--trust-remote-code" in capsys.readouterr().err  # refused, not run silently
    assert main([*predict, "--trust-remote-code"]) == 0
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    model, tokenizer = load_model(str(merged), trust_remote_code=True)
    examples = emotion_examples(data["dev_dialogues"], PromptConfig("zh", window=3))
    assert [r["id"] for r in rows] == [e.id for e in examples]
    for row, example in list(zip(rows, examples, strict=True))[:4]:
        context = encode_pair(BAICHUAN, example.prompt, "", tokenizer)[0]
        assert len(context) < 160  # not truncated: the reference scores the whole prompt
        reference = np.array([reference_log_prob(model, tokenizer, example.prompt, a) for a in LABELS])
        probs = np.exp(reference - reference.max())
        np.testing.assert_allclose([row["probs"][a] for a in LABELS], probs / probs.sum(), atol=1e-4)
        assert row["label"] == LABELS[int(np.argmax(reference))]


def test_a_tokenizer_the_workaround_cannot_fix_fails_in_one_line_naming_the_fix(data, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(data["base"], broken)
    code = broken / "tokenization_tiny_baichuan.py"
    code.write_text(code.read_text().replace("return self.sp_model.get_piece_size()",
                                             "return self.vocabulary.get_piece_size()"))
    args = ["predict", "--model", str(broken), "--template", "baichuan2", "--trust-remote-code",
            "--input", str(data["dev"]), "--out", str(tmp_path / "p.jsonl")]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "move `super().__init__(...)` below `self.sp_model.Load" in error
    assert not (tmp_path / "p.jsonl").exists()
