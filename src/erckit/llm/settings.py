"""How an LLM labels, declared without torch (the CLI builds its parser from it): the backends, the decoding
presets, and `PredictSettings`, the one declaration of `erckit predict`'s LLM settings — its flags are derived
from these fields (`erckit.flags`), each with its help, choices and the backends it applies to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

from erckit.config import PRECISIONS, LLMConfig
from erckit.prompts import setting

BACKENDS = ("score", "generate", "vllm", "vllm-generate")
GENERATING = ("generate", "vllm-generate")
UNPARSED_POLICIES = ("fail", "score")  # generate: an unparseable answer stops the run, or label scoring resolves it
SCORING_BACKENDS = ("score", "vllm")  # labels from the 7 label probabilities: calibration offsets apply
VLLM_BACKENDS = ("vllm", "vllm-generate")
# prompts (dialogue form with score: dialogues) per batch and resumable unit, when --batch-size is not given;
# `score` on an erckit run uses the run's own (its recorded eval_batch_size)
DEFAULT_BATCH = {"score": LLMConfig.eval_batch_size, "generate": 8, "vllm": 512, "vllm-generate": 512}


@dataclass(frozen=True)
class Decoding:
    """How answers are decoded; greedy by default. `top_k=0` disables top-k (the model's default is ignored)."""

    max_new_tokens: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, not {self.temperature} (use do_sample=False for greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, not {self.repetition_penalty}")


GREEDY = Decoding()
# The reference pipeline's decoding: sampling at temperature 0.3 with a light repetition penalty, seeded.
REFERENCE_DECODING = Decoding(do_sample=True, temperature=0.3, repetition_penalty=1.05)
DECODING_PRESETS: dict[str, Decoding] = {"greedy": GREEDY, "reference": REFERENCE_DECODING}


@dataclass(frozen=True)
class PredictSettings:
    """How `erckit predict` runs an LLM: the backend and its batches, decoding, precision, device, vLLM's memory.
    A field's `applies` metadata names the backends it means something for (other backends refuse it)."""

    backend: str = setting("score", "score: label log-probabilities, always valid; generate: free text, parsed",
                           BACKENDS)
    batch_size: int | None = setting(None, "prompts per batch (dialogue form with score: dialogues)",
                                     shown=f"the run's, else {DEFAULT_BATCH['score']}; generate "
                                           f"{DEFAULT_BATCH['generate']}; vLLM {DEFAULT_BATCH['vllm']}")
    decoding: str = setting("greedy", "generate: greedy, or reference: the reference pipeline's temperature 0.3 + "
                            "repetition penalty 1.05", tuple(DECODING_PRESETS), applies=GENERATING)
    max_new_tokens: int | None = setting(None, "generate: answer length cap", shown=str(GREEDY.max_new_tokens),
                                         applies=GENERATING)
    unparsed: str = setting("fail", "generate: unparseable answers stop the run (fail) or are resolved by label "
                            "scoring", UNPARSED_POLICIES, applies=GENERATING)
    dtype: str = setting("auto", "weights' precision; auto: fp32 on CPU; on GPU an erckit run's training precision, "
                         "else bf16 (or fp16 without native bf16)", PRECISIONS)
    device: str | None = setting(None, "cpu, cuda, cuda:N, or auto: spread over all GPUs",
                                 shown="cuda when there is a GPU, else cpu")
    tensor_parallel_size: int = setting(1, "vLLM: GPUs per model", applies=VLLM_BACKENDS)
    gpu_memory_utilization: float = setting(0.9, "vLLM: share of each GPU's memory it may take (vllm-cpu: of the "
                                            "machine's)", applies=VLLM_BACKENDS)
    max_num_batched_tokens: int | None = setting(None, "vLLM: tokens per engine step, bounds activation memory",
                                                 shown="vLLM's", applies=VLLM_BACKENDS)

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens", "tensor_parallel_size", "max_num_batched_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], not {self.gpu_memory_utilization}")

    def not_applying(self, given: Iterable[str]) -> str | None:
        """The first of the `given` fields that means nothing for this backend, or None."""
        applies = {f.name: f.metadata.get("applies") for f in fields(self)}
        return next((name for name in given if applies[name] and self.backend not in applies[name]), None)

    def decoding_preset(self) -> Decoding:
        """The chosen decoding preset with the answer length cap, if one is given."""
        chosen = DECODING_PRESETS[self.decoding]
        return replace(chosen, max_new_tokens=self.max_new_tokens) if self.max_new_tokens else chosen
