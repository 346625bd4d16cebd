"""How readable is each utterance's emotion at its question, before any training? A linear probe.

    .venv/bin/python bench/dialogue_probe.py --question number|quoted [--train-dialogues 250] [--dev-limit 600]

The packaged gemma-3-270m (base, no adapter) reads BMELD dialogues in the dialogue form; the last
hidden state at each utterance's question (the position that predicts its label) is the feature of a
class-balanced logistic regression fitted on the first `--train-dialogues` train dialogues and scored
on the first `--dev-limit` dev utterances. `number`: the question is the utterance's number (the
dialogue form as shipped); `quoted`: the question repeats the utterance's own numbered line, as the
window form quotes its target. Prints JSON (dev macro- and weighted-F1 per regularisation strength).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from transformers import AutoModelForCausalLM, AutoTokenizer

from erckit.data import Dialogue, first_utterances
from erckit.formats import read_dialogues
from erckit.llm.chat import get_template
from erckit.llm.dialogue_form import dialogue_trees, merge_trees, token_budget_groups
from erckit.llm.packaged import resolve_model
from erckit.llm.packing import batch, pack, sliding_window_of
from erckit.prompts import DialoguePrompt, PromptConfig, dialogue_prompt

BMELD = Path(os.environ.get("BMELD") or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bmeld")  # $BMELD, else beside the repo


def prompt_of(dialogue: Dialogue, config: PromptConfig, question: str) -> DialoguePrompt:
    """The shipped dialogue-form texts, or the same with each question quoting its own turn."""
    prompt = dialogue_prompt(dialogue, config)
    if question == "quoted":
        return DialoguePrompt(prompt.intro, prompt.turns, [turn.rstrip("\n") for turn in prompt.turns])
    return prompt


@torch.no_grad()
def question_features(model, tokenizer, dialogues: list[Dialogue], question: str) -> tuple[np.ndarray, list[str]]:
    """[utterances, hidden] last hidden states at each question's last token, and the gold labels."""
    config, template = PromptConfig(language="zh", form="dialogue"), get_template("plain")
    trees, labels = [], []
    for dialogue in dialogues:
        prompt = prompt_of(dialogue, config, question)
        for tree in dialogue_trees(dialogue, tokenizer, template, config, ["Neutral"], max_length=768, prompt=prompt):
            trees.append(tree)
            labels += [dialogue.utterances[i].label for i in tree.utterances]
    lengths = [sum(len(s.ids) for s in tree.segments) for tree in trees]
    window, features = sliding_window_of(model.config), []
    for group in token_budget_groups(lengths, 1024):
        segments, offsets = merge_trees([trees[i] for i in group])
        packed = pack(segments)
        positions = [packed.last_position(offset + q, segments) for i, offset in zip(group, offsets)
                     for q in trees[i].questions]
        inputs = batch([packed], tokenizer.pad_token_id, torch.float32, "cpu", window)
        features.append(model.model(**inputs).last_hidden_state[0, positions].numpy())
    return np.concatenate(features), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", choices=("number", "quoted"), required=True)
    parser.add_argument("--train-dialogues", type=int, default=250)
    parser.add_argument("--dev-limit", type=int, default=600)
    args = parser.parse_args()
    path = resolve_model("packaged:gemma-3-270m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    train = read_dialogues(BMELD / "train_sent_emo.csv")[: args.train_dialogues]
    dev = first_utterances(read_dialogues(BMELD / "dev_sent_emo.csv"), args.dev_limit)
    x_train, y_train = question_features(model, tokenizer, train, args.question)
    x_dev, y_dev = question_features(model, tokenizer, dev, args.question)
    result = {"question": args.question, "train_utterances": len(y_train), "dev_utterances": len(y_dev)}
    for c in (0.1, 1.0):
        guess = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x_train, y_train).predict(x_dev)
        result[f"C={c}"] = {"macro_f1": round(f1_score(y_dev, guess, average="macro"), 4),
                            "weighted_f1": round(f1_score(y_dev, guess, average="weighted"), 4)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
