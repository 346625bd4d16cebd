"""Free-text generation: the model writes its answer, `labels.parse_answer` reads the label from it.

Unlike label scoring, an answer may name no label (or several). Such answers are never dropped and
never replaced by a guess: `erckit.llm.predict` counts them and fails by default (see there).

Models with their own code (Baichuan2) index `past_key_values[0][0]` and break on the cache objects
of `model.generate`: they are decoded by `stepwise_generate`, one token per step on the tuple cache the
model returns, with transformers' own logits processors (same answers as `generate`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence

import torch

from erckit.llm.chat import ChatTemplate
from erckit.llm.scoring import forward_parameters, keep_recent, left_pad, length_batches, one_token_steps
from erckit.llm.settings import GREEDY, Decoding
from erckit.progress import bar as progress_bar


def stop_token_ids(model, tokenizer, template: ChatTemplate) -> list[int]:
    """EOS ids (the tokenizer's and the model's) plus the template's answer_end when it is one token."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        ids += value if isinstance(value, list) else ([value] if value is not None else [])
    if template.answer_end:
        end = tokenizer(template.answer_end, add_special_tokens=False)["input_ids"]
        if len(end) == 1:
            ids.append(end[0])
    return list(dict.fromkeys(ids))


def answer_from_tokens(tokens: Sequence[int], tokenizer, template: ChatTemplate, stops: Sequence[int]) -> str:
    """The decoded answer: up to the first stop token or answer_end text, special tokens removed, stripped."""
    tokens = list(tokens)
    for position, token in enumerate(tokens):
        if token in stops:
            tokens = tokens[:position]
            break
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    for marker in (template.answer_end, tokenizer.eos_token):
        if marker and marker in text:
            text = text[: text.index(marker)]
    return text.strip()


def generation_kwargs(decoding: Decoding, tokenizer, stops: list[int]) -> dict:
    """Arguments for `model.generate`; every sampling knob is set so the model's own defaults do not leak in."""
    kwargs = {
        "max_new_tokens": decoding.max_new_tokens,
        "do_sample": decoding.do_sample,
        "repetition_penalty": decoding.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": stops,
    }
    if decoding.do_sample:
        kwargs |= {"temperature": decoding.temperature, "top_p": decoding.top_p, "top_k": decoding.top_k}
    return kwargs


def logits_processors(decoding: Decoding):
    """transformers' processors for `decoding`, in `generate`'s order (penalty, temperature, top-k, top-p)."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if decoding.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(decoding.repetition_penalty))
    if decoding.do_sample:
        if decoding.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(decoding.temperature))
        if decoding.top_k:
            processors.append(TopKLogitsWarper(decoding.top_k))
        if decoding.top_p < 1.0:
            processors.append(TopPLogitsWarper(decoding.top_p))
    return processors


def truncate_for_generation(contexts: list[list[int]], max_model_len: int, max_new_tokens: int) -> list[list[int]]:
    """Contexts that leave room for `max_new_tokens`, cut as `encode_contexts` cuts (first token kept)."""
    room = max_model_len - max_new_tokens
    if room < 2:
        raise ValueError(
            f"max_new_tokens ({max_new_tokens}) leaves no room for a context in max_length ({max_model_len})"
        )
    return [keep_recent(c, room) for c in contexts]


@torch.no_grad()
def stepwise_generate(model, ids: torch.Tensor, mask: torch.Tensor, decoding: Decoding, stops: list[int],
                      pad_id: int) -> torch.Tensor:
    """[B, new tokens] decoded one token per forward call on the model's own (tuple) cache."""
    processors, accepts = logits_processors(decoding), forward_parameters(model)
    stop_ids = torch.tensor(stops, device=ids.device)
    sequence, inputs, cache = ids, ids, None
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    for _ in range(decoding.max_new_tokens):
        extra = {"position_ids": positions} if "position_ids" in accepts else {}
        out = model(input_ids=inputs, attention_mask=mask, past_key_values=cache, use_cache=True, **extra)
        cache = out.past_key_values
        scores = processors(sequence, out.logits[:, -1].float())
        if decoding.do_sample:
            token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            token = scores.argmax(dim=-1)
        token = torch.where(finished, pad_id, token)
        sequence, inputs = torch.cat([sequence, token[:, None]], dim=1), token[:, None]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        finished |= torch.isin(token, stop_ids)
        if finished.all():
            break
    return sequence[:, ids.shape[1] :]


@torch.no_grad()
def generate_from_contexts(
    model,
    tokenizer,
    contexts: list[list[int]],
    template: ChatTemplate,
    decoding: Decoding = GREEDY,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> list[str]:
    """The model's answer after each token-id context, batched by length, left-padded.

    With sampling, each batch is seeded from `decoding.seed` and its contexts, so a rerun with the
    same batches gives the same answers.
    """
    if not contexts:
        return []
    stops = stop_token_ids(model, tokenizer, template)
    kwargs = generation_kwargs(decoding, tokenizer, stops)
    answers: list[str] = [""] * len(contexts)
    bar = progress_bar(len(contexts), "generating", unit="prompt", show=progress)
    for batch in length_batches([len(c) for c in contexts], batch_size):
        ids, mask = left_pad([contexts[i] for i in batch], tokenizer.pad_token_id, model.device)
        if decoding.do_sample:
            torch.manual_seed(decoding.seed + zlib.crc32(json.dumps([contexts[i] for i in batch]).encode()))
        if one_token_steps(model):
            new = stepwise_generate(model, ids, mask, decoding, stops, tokenizer.pad_token_id)
        else:
            new = model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, ids.shape[1] :]
        for row, index in enumerate(batch):
            answers[index] = answer_from_tokens(new[row].tolist(), tokenizer, template, stops)
        bar.update(len(batch))
    bar.close()
    return answers
