"""Tokens per training epoch: the reference pipeline's window form vs the dialogue form, on BMELD train.

    .venv/bin/python bench/dialogue_tokens.py [--model packaged:gemma-3-270m] [--template plain] [--window 10] \
        [--question number|quoted|marker] [--same-speaker N] [--data TRAIN]

Counts the tokens a model reads in one epoch: window form = context + answer of every utterance's
prompt (as `erckit train` tokenises it, untruncated); dialogue form = the packed rows of whole
dialogues (instruction and turns once, each utterance's question and gold answer; `--question` as
`llm.prompt.question`); `--same-speaker N` also counts the window form's auxiliary same-speaker questions
(`llm.prompt.same_speaker`), as `erckit train` draws them. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

from transformers import AutoTokenizer

from erckit.formats import read_dialogues
from erckit.llm.chat import encode_pair, get_template
from erckit.llm.dialogue_form import dialogue_trees
from erckit.llm.packaged import resolve_model
from erckit.prompts import QUESTIONS, PromptConfig, detect_language, emotion_examples, same_speaker_examples

BMELD = Path(os.environ.get("BMELD") or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bmeld")  # $BMELD, else beside the repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="packaged:gemma-3-270m")
    parser.add_argument("--template", default="plain")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--data", default=str(BMELD / "train_sent_emo.csv"))
    parser.add_argument("--question", choices=QUESTIONS, default="number")
    parser.add_argument("--same-speaker", type=int, default=0, help="same-speaker questions per dialogue (window form)")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    template = get_template(args.template)
    dialogues = read_dialogues(Path(args.data))
    config = PromptConfig(language=detect_language(dialogues), window=args.window)
    def tokens(examples) -> int:
        return sum(len(c) + len(t) for c, t in (encode_pair(template, e.prompt, e.answer, tokenizer) for e in examples))

    window_tokens = tokens(emotion_examples(dialogues, config))
    same_speaker = same_speaker_examples(dialogues, config, args.same_speaker) if args.same_speaker else []
    parts = {"instruction": 0, "turns": 0, "questions": 0, "answers": 0}
    dialogue_config = replace(config, form="dialogue", question=args.question)
    for dialogue in dialogues:
        for tree in dialogue_trees(dialogue, tokenizer, template, dialogue_config, gold=True):
            questions, answers = set(tree.questions), {a for group in tree.answers for a in group}
            for index, segment in enumerate(tree.segments):
                part = ("instruction" if index == 0 else "questions" if index in questions
                        else "answers" if index in answers else "turns")
                parts[part] += len(segment.ids)
    dialogue_tokens = sum(parts.values())
    utterances = sum(len(d) for d in dialogues)
    print(json.dumps({
        "data": args.data, "model": args.model, "template": args.template, "window": args.window,
        "question": args.question,
        "dialogues": len(dialogues), "utterances": utterances,
        "window_form_tokens": window_tokens, "dialogue_form_tokens": dialogue_tokens,
        "ratio": round(window_tokens / dialogue_tokens, 2),
        **({"same_speaker_questions": len(same_speaker), "same_speaker_tokens": tokens(same_speaker)}
           if args.same_speaker else {}),
        "tokens_per_utterance": {"window": round(window_tokens / utterances, 1),
                                 "dialogue": round(dialogue_tokens / utterances, 1)},
        "dialogue_form_per_utterance": {part: round(count / utterances, 2) for part, count in parts.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
