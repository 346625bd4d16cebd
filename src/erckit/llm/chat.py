"""Chat templates: how an instruction prompt and its answer are laid out for a given chat model.

Training and every prediction backend use the same layout, so the answer a model learned is the
answer it is scored on: `prefix + prompt + suffix` is the context, `answer + answer_end` the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the CLI's --template choices need no transformers
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class ChatTemplate:
    """Text around the prompt; `answer_end` closes an answer ('' means the tokenizer's EOS token)."""

    name: str
    prefix: str
    suffix: str
    answer_end: str = ""


CHAT_TEMPLATES: dict[str, ChatTemplate] = {
    # Baichuan2-Chat: <reserved_106> user <reserved_107> assistant (the reference pipeline's template).
    "baichuan2": ChatTemplate("baichuan2", "<reserved_106>", "<reserved_107>"),
    # Qwen2.5-Instruct: ChatML with Qwen2.5's default system prompt (as its own chat template and
    # LLaMA-Factory's qwen template write it).
    "qwen2.5": ChatTemplate(
        "qwen2.5",
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n",
        "<|im_end|>\n<|im_start|>assistant\n",
        "<|im_end|>",
    ),
    # Qwen2 / ChatML with the generic system prompt.
    "chatml": ChatTemplate(
        "chatml",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>\n<|im_start|>assistant\n",
        "<|im_end|>",
    ),
    "gemma": ChatTemplate("gemma", "<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>"),
    # No chat markup: for base models and tiny test models.
    "plain": ChatTemplate("plain", "", "\n"),
}


def get_template(name: str) -> ChatTemplate:
    """The named template; a clear error for an unknown name."""
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template {name!r} (choose from {', '.join(CHAT_TEMPLATES)})")
    return CHAT_TEMPLATES[name]


def context_text(template: ChatTemplate, prompt: str) -> str:
    """The text the model reads before it answers."""
    return template.prefix + prompt + template.suffix


def answer_text(template: ChatTemplate, answer: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The answer as trained and scored, closed by the template's end marker or the EOS token."""
    return answer + (template.answer_end or tokenizer.eos_token or "")


def encode_pair(
    template: ChatTemplate, prompt: str, answer: str, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[int], list[int]]:
    """Token ids of the context (with the tokenizer's BOS, if any) and of the closed answer, tokenised apart."""
    context = encode_text(tokenizer, context_text(template, prompt), special=True)
    return context, encode_text(tokenizer, answer_text(template, answer, tokenizer), special=False)


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, *, special: bool) -> list[int]:
    """Token ids of `text`; with `special`, the tokenizer's BOS (if any) but never a trailing EOS."""
    ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
    if special and tokenizer.eos_token_id is not None and ids and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]  # some tokenizers append EOS to every text
    return ids
