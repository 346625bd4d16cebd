"""LLM prediction engine on a tiny in-process Llama with the real XLM-R tokenizer (see llm_tiny.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from erckit.data import DataError
from erckit.labels import LABELS, parse_answer
from erckit.llm import scoring
from erckit.llm.backends import Backend
from erckit.llm.chat import get_template
from erckit.llm.items import items_from_dialogues
from erckit.llm.loading import load_model
from erckit.llm.predict import UnparsedAnswers
from erckit.llm.settings import GREEDY, REFERENCE_DECODING
from erckit.predictions import read_llamafactory, read_predictions
from llm_calls import generate_answers, label_log_probs, predict_file, vllm_label_log_probs
from llm_tiny import brute_force_log_prob, fit_answers, save_tiny, tiny_model, tiny_tokenizer

PLAIN = get_template("plain")
CHATML = get_template("chatml")  # answer_end <|im_end|>: several tokens with this tokenizer
MIXED_PROMPTS = [
    "你好",
    "这是一个比较长的句子，用来检查左填充、位置编号和注意力掩码是否都正确。" * 2,
    "Hello there, how are you today?",
    "a",
    "他说：我明天再去问问。",
]
# Taught answers: four name a label, two do not (none, and two labels).
TAUGHT = [
    ("今天真开心", "Happy"), ("我很难过", "Sad"), ("你太过分了", "Anger"),
    ("外面有声音", "Fear"), ("随便说说", "不知道"), ("嗯嗯", "愤怒还是高兴"),
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster, and immune to a busy machine's other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture(scope="module")
def tiny_folder(tiny, tokenizer, tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llm"), tiny, tokenizer)


@pytest.fixture(scope="module")
def taught_folder(tokenizer, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    model = tiny_model(tokenizer, hidden_size=64, intermediate_size=128)  # 64: robust margins over 250k tokens
    model = fit_answers(model, tokenizer, PLAIN, TAUGHT)
    return save_tiny(tmp_path_factory.mktemp("taught-llm"), model, tokenizer)


def prepared_file(path: Path, prompts: list[str]) -> Path:
    records = [
        {"id": f"u{i}", "instruction": p, "input": "", "output": LABELS[i % 7], "history": []}
        for i, p in enumerate(prompts)
    ]
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("template", [PLAIN, CHATML], ids=["plain", "chatml"])
def test_label_log_probs_match_brute_force(tiny, tokenizer, template):
    got = label_log_probs(tiny, tokenizer, MIXED_PROMPTS, template, batch_size=3)
    want = np.array([[brute_force_log_prob(tiny, tokenizer, template, p, a) for a in LABELS] for p in MIXED_PROMPTS])
    assert got.shape == (len(MIXED_PROMPTS), 7)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_label_log_probs_with_a_sliding_window_cache(tokenizer):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = Gemma3ForCausalLM(config).eval()  # the window (8 tokens) is shorter than most prompts
    template = get_template("gemma")
    got = label_log_probs(model, tokenizer, MIXED_PROMPTS, template, batch_size=5)
    want = [[brute_force_log_prob(model, tokenizer, template, p, a) for a in LABELS] for p in MIXED_PROMPTS]
    np.testing.assert_allclose(got, np.array(want), atol=1e-4, rtol=0)


def test_scoring_without_logits_to_keep_gives_the_same(tiny, tokenizer, monkeypatch):
    want = label_log_probs(tiny, tokenizer, MIXED_PROMPTS, PLAIN, batch_size=5)
    monkeypatch.setattr(scoring, "forward_parameters", lambda model: {"position_ids"})
    got = label_log_probs(tiny, tokenizer, MIXED_PROMPTS, PLAIN, batch_size=5)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_score_backend_writes_valid_predictions_for_every_id(tiny_folder, tmp_path, reference_file):
    from erckit.formats import read_dialogues

    dialogues = read_dialogues(reference_file)
    out = tmp_path / "predictions.jsonl"
    summary = predict_file(str(tiny_folder), out, dialogues=dialogues, template="plain", batch_size=4)
    predictions = read_predictions(out)  # validates labels, probs and duplicate ids
    ids = [item.id for item in items_from_dialogues(dialogues)]
    assert list(predictions) == ids and summary.total == len(ids) == 15
    for prediction in predictions.values():
        assert prediction.label in LABELS
        assert prediction.label == max(prediction.probs, key=prediction.probs.get)
        assert sum(prediction.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert not (tmp_path / "predictions.jsonl.partial").exists()


@pytest.mark.integration
def test_killed_run_resumes_to_the_same_result(tiny_folder, tmp_path, monkeypatch):
    prompts = [f"第{i}句：{'好' * (i % 5)}今天天气怎么样？" for i in range(10)]
    prepared = prepared_file(tmp_path / "data_test.json", prompts)
    reference = tmp_path / "reference.jsonl"
    predict_file(str(tiny_folder), reference, prepared=prepared, template="plain", batch_size=3)

    out = tmp_path / "out" / "predictions.jsonl"
    partial = out.with_name("predictions.jsonl.partial")
    real_run, calls = Backend.run, []

    def dies_after_two_batches(self, batch):
        calls.append(len(batch))
        if len(calls) > 2:
            raise KeyboardInterrupt("killed")
        return real_run(self, batch)

    monkeypatch.setattr(Backend, "run", dies_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        predict_file(str(tiny_folder), out, prepared=prepared, template="plain", batch_size=3)
    assert not out.exists()
    lines = partial.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 6  # settings header + two batches of three
    with open(partial, "a", encoding="utf-8") as handle:
        handle.write('{"id": "u9", "label": "Ha')  # killed in the middle of a line

    monkeypatch.setattr(Backend, "run", real_run)
    summary = predict_file(str(tiny_folder), out, prepared=prepared, template="plain", batch_size=3)
    assert (summary.resumed, summary.computed) == (6, 4)
    assert out.read_text(encoding="utf-8") == reference.read_text(encoding="utf-8")
    assert list(read_predictions(out)) == [f"u{i}" for i in range(10)]
    assert not partial.exists()


def test_partial_file_of_other_settings_is_refused(tiny_folder, tmp_path):
    prepared = prepared_file(tmp_path / "data_test.json", MIXED_PROMPTS)
    out = tmp_path / "predictions.jsonl"
    header = {"erckit_partial": 1, "settings": {"backend": "score", "template": "something else"}}
    out.with_name("predictions.jsonl.partial").write_text(json.dumps(header) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="other settings"):
        predict_file(str(tiny_folder), out, prepared=prepared, template="plain")
    assert not out.exists()


def test_llamafactory_export_reads_back(tiny_folder, tmp_path):
    prepared = prepared_file(tmp_path / "data_test.json", MIXED_PROMPTS)
    out, generated = tmp_path / "predictions.jsonl", tmp_path / "generated_predictions.jsonl"
    predict_file(str(tiny_folder), out, prepared=prepared, template="chatml", llamafactory=generated)
    rows = [json.loads(line) for line in generated.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["prompt"].startswith("<|im_start|>system") and rows[0]["label"] == LABELS[0]
    back = read_llamafactory(generated, prepared)
    assert {k: p.label for k, p in back.items()} == {k: p.label for k, p in read_predictions(out).items()}


# --------------------------------------------------------------------------------------- generation


def test_greedy_generation_is_deterministic_and_unparsed_answers_are_counted(taught_folder):
    model, tokenizer = load_model(str(taught_folder))
    prompts = [p for p, _ in TAUGHT]
    first = generate_answers(model, tokenizer, prompts, PLAIN, GREEDY, batch_size=4)
    assert first == [a for _, a in TAUGHT]
    assert generate_answers(model, tokenizer, prompts[::-1], PLAIN, batch_size=3) == first[::-1]
    sampled = [generate_answers(model, tokenizer, prompts, PLAIN, REFERENCE_DECODING) for _ in range(2)]
    assert sampled[0] == sampled[1]  # seeded
    assert [parse_answer(answer) for answer in first] == ["Happy", "Sad", "Anger", "Fear", None, None]


def test_answer_text_stops_at_the_closing_marker(tokenizer):
    from erckit.llm.generation import answer_from_tokens, stop_token_ids

    stops = stop_token_ids(None, tokenizer, CHATML)  # <|im_end|> is several tokens here: cut by text
    tokens = tokenizer(" Happy<|im_end|>\nSad", add_special_tokens=False)["input_ids"]
    assert answer_from_tokens(tokens, tokenizer, CHATML, stops) == "Happy"
    tokens = tokenizer("Sad", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert answer_from_tokens(tokens + tokens, tokenizer, PLAIN, stop_token_ids(None, tokenizer, PLAIN)) == "Sad"


def test_unparsed_answers_fail_the_run_then_resolve_by_scoring(taught_folder, tmp_path, monkeypatch):
    prepared = prepared_file(tmp_path / "data_test.json", [p for p, _ in TAUGHT])
    out = tmp_path / "predictions.jsonl"
    with pytest.raises(UnparsedAnswers, match=r"2 of 6 generated answers \(33.3%\)") as failure:
        predict_file(str(taught_folder), out, prepared=prepared, template="plain", backend="generate")
    assert "u4: '不知道'" in str(failure.value)
    assert not out.exists()
    listed = [json.loads(line) for line in out.with_name("predictions.jsonl.unparsed.jsonl").read_text().splitlines()]
    assert listed == [{"id": "u4", "raw": "不知道"}, {"id": "u5", "raw": "愤怒还是高兴"}]

    def no_generation(self, prompts):
        raise AssertionError("answers are generated again")

    monkeypatch.setattr(Backend, "run", no_generation)
    summary = predict_file(
        str(taught_folder), out, prepared=prepared, template="plain", backend="generate", unparsed="score",
    )
    predictions = read_predictions(out)
    assert len(predictions) == 6 and len(summary.unparsed) == 2
    assert [predictions[f"u{i}"].label for i in range(4)] == ["Happy", "Sad", "Anger", "Fear"]
    assert predictions["u4"].raw == "不知道" and predictions["u4"].label in LABELS
    assert predictions["u4"].probs is not None and predictions["u0"].probs is None
    assert not out.with_name("predictions.jsonl.partial").exists()


# ------------------------------------------------------------------------------------------- LoRA


def test_lora_adapter_loads_and_changes_scores(tiny, tokenizer, tiny_folder, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_folder)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft.named_parameters():
            if "lora_B" in name:  # zero at init: perturb it so the adapter does something
                parameter.normal_(0, 0.5)
    adapter = tmp_path / "adapter"
    peft.save_pretrained(adapter)

    merged, loaded_tokenizer = load_model(str(tiny_folder), adapter=str(adapter))
    unmerged, _ = load_model(str(tiny_folder), adapter=str(adapter), merge=False)
    assert loaded_tokenizer.padding_side == "left" and loaded_tokenizer.pad_token == "<pad>"
    before = label_log_probs(tiny, tokenizer, MIXED_PROMPTS, PLAIN)
    after = label_log_probs(merged, tokenizer, MIXED_PROMPTS, PLAIN)
    assert np.abs(after - before).max() > 0.1
    kept = label_log_probs(unmerged, tokenizer, MIXED_PROMPTS, PLAIN)
    np.testing.assert_allclose(kept, after, atol=1e-3)

# -------------------------------------------------------------------------------------------- vLLM


@pytest.mark.gpu  # deselected unless asked for (pytest -m gpu, on a CUDA machine with the gpu extra): it fails there
def test_vllm_scores_match_transformers(tiny_folder):
    import vllm  # noqa: F401  (the gpu extra)

    assert torch.cuda.is_available(), "pytest -m gpu needs a CUDA GPU"
    from erckit.llm.vllm_backend import VLLMOptions, vllm_engine

    model, tokenizer = load_model(str(tiny_folder), dtype="float32", device="cuda")
    want = label_log_probs(model, tokenizer, MIXED_PROMPTS, PLAIN)
    engine = vllm_engine(str(tiny_folder), dtype="float32", options=VLLMOptions(gpu_memory_utilization=0.3))
    got = vllm_label_log_probs(engine, MIXED_PROMPTS, PLAIN)
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
