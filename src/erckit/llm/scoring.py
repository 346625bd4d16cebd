"""Label scoring: the log-probability a causal LM gives each of the 7 label answers, for every prompt.

The answer scored is exactly the trained target (`chat.encode_pair`: the label word and the closing
marker or EOS), all of its tokens. The label is the argmax, so it is always valid and deterministic;
a softmax over the 7 sums gives the probabilities.

Cost: one forward pass over each batch of prompts (left-padded, sorted by length), keeping logits
for the last position only; its KV cache is repeated once per answer and a second, short pass runs
the answer tokens (all answers at once). Full-vocabulary logits exist only for the few answer
positions, never for the prompt.

Models with their own code (`trust_remote_code`, e.g. Baichuan2) may accept only one new token on top
of a cache (Baichuan2 trims its alibi mask only then) and keep legacy tuple caches: for them
(`one_token_steps`) the answer tokens are fed one per step on the tuple cache the model returned.
The log-probabilities are the same; only the number of forward calls differs.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch

from erckit.llm.chat import ChatTemplate, encode_pair
from erckit.predictions import Prediction, from_probabilities
from erckit.progress import bar as progress_bar


def forward_parameters(model) -> set[str]:
    """Names the model's forward accepts explicitly (a PeftModel is looked through)."""
    return set(inspect.signature(unwrapped(model).forward).parameters)


def unwrapped(model):
    """The transformers model inside a training wrapper (DDP, DeepSpeed, FSDP: the Trainer hands its loss the
    wrapped model) and a PeftModel, or the model itself."""
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def one_token_steps(model) -> bool:
    """Whether the model runs its own code (loaded with trust_remote_code): such models, like
    Baichuan2, may take only one new token on top of their cache and return tuple caches."""
    return type(unwrapped(model)).__module__.startswith("transformers_modules")


def encode_contexts(
    tokenizer, prompts: Sequence[str], template: ChatTemplate, answers: Sequence[str], max_length: int | None = None
) -> tuple[list[list[int]], list[list[int]]]:
    """Context ids per prompt and target ids per answer, as `encode_pair` tokenises them (apart).

    With `max_length`, a context too long for the longest answer loses its oldest tokens after
    the first (usually BOS), as in training.
    """
    targets = [encode_pair(template, "", answer, tokenizer)[1] for answer in answers]
    if any(not t for t in targets):
        raise ValueError("an answer encodes to no tokens")
    contexts = [encode_pair(template, prompt, answers[0], tokenizer)[0] for prompt in prompts]
    return scoring_contexts(contexts, targets, max_length), targets


def scoring_contexts(contexts: list[list[int]], targets: list[list[int]], max_length: int | None) -> list[list[int]]:
    """Contexts cut so the longest answer still fits in `max_length` (oldest tokens after the first dropped)."""
    if max_length is None:
        return contexts
    room = max_length - max(len(t) for t in targets)
    return [keep_recent(c, room) for c in contexts]


def keep_recent(context: list[int], room: int) -> list[int]:
    """`context` cut to `room` tokens: its first token (usually BOS) kept, the oldest after it dropped."""
    return context if len(context) <= room else context[:1] + context[len(context) - room + 1 :]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (out-of-memory shows at once)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def left_pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask, padded on the left."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under `logits` (float32), without a full log-softmax tensor."""
    logits = logits.float()
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def repeat_cache(cache, repeats: int):
    """The KV cache with every row repeated `repeats` times (rows stay adjacent)."""
    if isinstance(cache, tuple):  # legacy caches of remote-code models
        return tuple(tuple(t.repeat_interleave(repeats, dim=0) for t in layer) for layer in cache)
    cache.batch_repeat_interleave(repeats)
    return cache


@torch.no_grad()
def score_batch(
    model, contexts: list[list[int]], targets: list[list[int]], pad_id: int, accepts: set[str]
) -> np.ndarray:
    """[B, K] summed log-probs of the K targets after each of the B contexts."""
    device = model.device
    count, answers = len(contexts), len(targets)
    ids, mask = left_pad(contexts, pad_id, device)
    extra: dict = {}
    if "position_ids" in accepts:
        extra["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    if "logits_to_keep" in accepts:
        extra["logits_to_keep"] = 1
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, **extra)
    last = out.logits[:, -1, :].float()  # [B, V]: predicts every answer's first token
    first = torch.tensor([t[0] for t in targets], device=device).expand(count, -1)
    scores = last.gather(1, first) - torch.logsumexp(last, dim=-1, keepdim=True)  # [B, K]
    width = max(len(t) for t in targets) - 1
    if width == 0:
        return scores.cpu().numpy().astype(np.float64)
    # Second pass: every answer's tokens but its last, after the repeated prompt cache.
    inputs = torch.full((answers, width), pad_id, dtype=torch.long)
    nexts = torch.zeros((answers, width), dtype=torch.long)
    valid = torch.zeros((answers, width), dtype=torch.bool)
    for k, target in enumerate(targets):
        n = len(target) - 1
        inputs[k, :n] = torch.tensor(target[:-1])
        nexts[k, :n] = torch.tensor(target[1:])
        valid[k, :n] = True
    inputs, nexts, valid = inputs.to(device), nexts.to(device), valid.to(device)
    cache = repeat_cache(out.past_key_values, answers)
    rows = (mask.repeat_interleave(answers, dim=0), valid.long().repeat(count, 1))
    start = mask.sum(-1).repeat_interleave(answers)  # real prompt length per row
    step = answer_steps if one_token_steps(model) else answer_pass
    rest = step(model, cache, inputs.repeat(count, 1), nexts.repeat(count, 1), rows, start, accepts)
    rest = torch.where(valid.repeat(count, 1), rest, 0.0).sum(-1).view(count, answers)
    del cache, out
    return (scores + rest).cpu().numpy().astype(np.float64)


def answer_pass(model, cache, inputs, nexts, rows, start, accepts) -> torch.Tensor:
    """[R, W] log-probs of `nexts` after the cached prompt and `inputs`, in one forward pass."""
    width = inputs.shape[1]
    extra = {}
    if "position_ids" in accepts:
        extra["position_ids"] = start[:, None] + torch.arange(width, device=inputs.device)[None, :]
    out = model(input_ids=inputs, attention_mask=torch.cat(rows, dim=1), past_key_values=cache, use_cache=True, **extra)
    return token_log_probs(out.logits, nexts)


def answer_steps(model, cache, inputs, nexts, rows, start, accepts) -> torch.Tensor:
    """As `answer_pass`, one token per forward call on the cache the model returns (legacy tuples kept)."""
    prompt_mask, answer_mask = rows
    columns = []
    for j in range(inputs.shape[1]):
        extra = {"position_ids": (start + j)[:, None]} if "position_ids" in accepts else {}
        mask = torch.cat([prompt_mask, answer_mask[:, : j + 1]], dim=1)
        out = model(input_ids=inputs[:, j : j + 1], attention_mask=mask, past_key_values=cache, use_cache=True, **extra)
        cache = out.past_key_values
        columns.append(token_log_probs(out.logits[:, -1], nexts[:, j]))
    return torch.stack(columns, dim=1)


def context_log_probs(
    model, tokenizer, contexts: list[list[int]], targets: list[list[int]], *, batch_size: int = 8, progress: bool = True
) -> np.ndarray:
    """[N, len(targets)]: log p(target | context) summed over the target's tokens, for token-id contexts."""
    result = np.zeros((len(contexts), len(targets)), dtype=np.float64)
    if not contexts:
        return result
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token")
    accepts = forward_parameters(model)
    bar = progress_bar(len(contexts), "scoring", unit="prompt", show=progress)
    for batch in length_batches([len(c) for c in contexts], batch_size):
        result[batch] = score_batch(model, [contexts[i] for i in batch], targets, pad_id, accepts)
        bar.update(len(batch))
    bar.close()
    return result


def softmax(log_probs: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [N, K] log-probabilities."""
    shifted = log_probs - log_probs.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=1, keepdims=True)


def predictions_from_log_probs(ids: Sequence[str], log_probs: np.ndarray) -> list[Prediction]:
    """Label = argmax of the 7 log-probs (always valid); probs = their softmax, rounded to 6 places."""
    return from_probabilities(list(ids), softmax(log_probs))

