"""vLLM engine for GPUs (the optional `gpu` extra): label scoring and generation, same inputs and outputs
as `scoring.label_log_probs` and `generation.generate_answers`.

vllm is imported inside the functions, so this module imports without it. Prompts are passed as token
ids built by `chat.encode_pair` with the model's own Hugging Face tokenizer, so vLLM sees exactly the
tokens the HF backends see.

Scoring uses prompt log-probabilities: one request per (prompt, label) holding context + answer, with
`prompt_logprobs=0` (vLLM returns the log-probability of each actual prompt token). vLLM does not reuse
its prefix cache for requests that ask for prompt log-probabilities, so the context is computed once
per label (7x the prompt work of the HF scorer, on a much faster engine). Tested only on a GPU
(tests marked `gpu`); written against vLLM's `LLM.generate(TokensPrompt, SamplingParams)` API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erckit.cache import MissingPackage
from erckit.labels import LABELS
from erckit.llm.chat import ChatTemplate
from erckit.llm.generation import GREEDY, Decoding, answer_from_tokens, stop_token_ids
from erckit.llm.loading import load_tokenizer, resolve_source
from erckit.llm.scoring import encode_contexts


@dataclass
class VLLMEngine:
    """A vLLM `LLM`, the HF tokenizer of the same model, and the LoRA request when an adapter is used."""

    llm: object
    tokenizer: object
    lora: object | None = None


def vllm_engine(
    model: str,
    *,
    adapter: str | None = None,
    tensor_parallel_size: int = 1,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.9,
    seed: int = 0,
) -> VLLMEngine:
    """Start vLLM on `model` (folder, hub id or packaged: name), over `tensor_parallel_size` GPUs.

    An `adapter` (PEFT LoRA folder) is served with vLLM's LoRA support; merging it first
    (`erckit merge`) is faster and is what vLLM handles best.
    """
    try:
        from vllm import LLM
    except ImportError as err:
        raise MissingPackage("the vllm backend needs vLLM and a CUDA GPU: pip install 'erckit[gpu]'") from err
    source = resolve_source(model)
    extra: dict = {}
    lora = None
    if adapter is not None:
        from vllm.lora.request import LoRARequest

        rank = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))["r"]
        extra = {"enable_lora": True, "max_lora_rank": max(8, 1 << (int(rank) - 1).bit_length())}
        lora = LoRARequest("erckit-adapter", 1, str(adapter))
    llm = LLM(
        model=source,
        tensor_parallel_size=tensor_parallel_size,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization,
        seed=seed,
        **extra,
    )
    tokenizer = load_tokenizer(source, adapter=adapter, trust_remote_code=trust_remote_code)
    return VLLMEngine(llm, tokenizer, lora)


def vllm_label_log_probs(
    engine: VLLMEngine,
    prompts: list[str],
    template: ChatTemplate,
    *,
    answers: Sequence[str] = LABELS,
    max_length: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """[N, len(answers)] summed log-probs of each closed answer after each prompt, as `label_log_probs`."""
    from vllm import SamplingParams

    contexts, targets = encode_contexts(engine.tokenizer, prompts, template, answers, max_length)
    requests = [{"prompt_token_ids": context + target} for context in contexts for target in targets]
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
    outputs = engine.llm.generate(requests, params, use_tqdm=progress, lora_request=engine.lora)
    result = np.zeros((len(prompts), len(targets)), dtype=np.float64)
    for n, output in enumerate(outputs):
        row, k = divmod(n, len(targets))
        start, target = len(contexts[row]), targets[k]
        for j, token in enumerate(target):
            entry = output.prompt_logprobs[start + j]
            if entry is None or token not in entry:
                raise RuntimeError(f"vLLM returned no log-probability for answer token {token} (prompt {row})")
            result[row, k] += entry[token].logprob
    return result


def vllm_generate_answers(
    engine: VLLMEngine,
    prompts: list[str],
    template: ChatTemplate,
    decoding: Decoding = GREEDY,
    *,
    progress: bool = False,
) -> list[str]:
    """The model's answer to each prompt, cut at the template's closing marker or EOS, as `generate_answers`."""
    from vllm import SamplingParams

    contexts, _ = encode_contexts(engine.tokenizer, prompts, template, LABELS)
    stops = stop_token_ids(None, engine.tokenizer, template)
    params = SamplingParams(
        max_tokens=decoding.max_new_tokens,
        temperature=decoding.temperature if decoding.do_sample else 0.0,
        top_p=decoding.top_p if decoding.do_sample else 1.0,
        top_k=(decoding.top_k or -1) if decoding.do_sample else -1,
        repetition_penalty=decoding.repetition_penalty,
        seed=decoding.seed,
        stop_token_ids=stops,
    )
    requests = [{"prompt_token_ids": context} for context in contexts]
    outputs = engine.llm.generate(requests, params, use_tqdm=progress, lora_request=engine.lora)
    return [answer_from_tokens(o.outputs[0].token_ids, engine.tokenizer, template, stops) for o in outputs]
