"""The dialogue form: one packed sequence gives every label exactly what a separate sequence would."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from erckit.data import Dialogue, Utterance
from erckit.labels import LABELS
from erckit.llm.chat import get_template
from erckit.llm.dialogue_form import chain_ids, dialogue_log_probs, dialogue_trees
from erckit.llm.dialogue_training import collate, packed_answer_loss, training_rows
from erckit.llm.packing import Segment, pack, sliding_window_of, visibility
from erckit.prompts import PromptConfig, dialogue_prompt
from llm_tiny import tiny_model, tiny_tokenizer

DIALOGUES = [
    Dialogue("d1", (
        Utterance("d1_1", "Ann", "你笑什么？我在问你话呢", "Happy"),
        Utterance("d1_2", "Bob", "义乌的", "Neutral"),
        Utterance("d1_3", "Ann", "义乌的怎么了", "Surprise"),
        Utterance("d1_4", "Cat", "没什么，就是觉得好玩", "Happy"),
    )),
    Dialogue("d2", (Utterance("d2_1", "Bob", "好，你这，这个有可能是没有骗的", "Neutral"),
                    Utterance("d2_2", "Ann", "那我明天再去问问", "Sad"))),
]


def test_visibility_is_ancestors_and_own_past() -> None:
    packed = pack([Segment([1, 2]), Segment([3], 0), Segment([4, 5], 0), Segment([6], 2)])
    allowed = visibility(packed).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],  # segment 1 sees the root, not its sibling
        [1, 1, 0, 1, 0, 0],  # segment 2 does not see segment 1
        [1, 1, 0, 1, 1, 0],
        [1, 1, 0, 1, 1, 1],  # segment 3 sees its parent chain
    ]
    assert packed.positions == [0, 1, 2, 2, 3, 4]
    with pytest.raises(ValueError, match="parent"):
        pack([Segment([1], 1), Segment([2])])


def test_a_marker_question_repeats_the_end_of_its_line() -> None:
    """`question: marker`: each line ends with its number in brackets; the question is that marker alone,
    and its tokens are the ones that close the line it asks about."""
    prompt = dialogue_prompt(DIALOGUES[0], PromptConfig(form="dialogue", question="marker"))
    assert prompt.turns[1] == "B：义乌的 [2]\n" and prompt.questions == [" [1]", " [2]", " [3]", " [4]"]
    assert "行末是方括号中的编号" in prompt.intro and "<Disgust, Anger" in prompt.intro
    english = dialogue_prompt(DIALOGUES[0], PromptConfig(language="en", form="dialogue", question="marker"))
    assert english.turns[3] == "C: 没什么，就是觉得好玩 [4]\n" and "number in brackets at its end" in english.intro
    tokenizer = tiny_tokenizer()
    for turn, question in zip(prompt.turns, prompt.questions, strict=True):
        line = tokenizer(turn.rstrip("\n"), add_special_tokens=False)["input_ids"]
        marker = tokenizer(question, add_special_tokens=False)["input_ids"]
        assert line[-len(marker):] == marker


def test_dialogue_prompt_numbers_turns_once() -> None:
    prompt = dialogue_prompt(DIALOGUES[0], PromptConfig())
    assert prompt.turns[0] == "1 A：你笑什么？我在问你话呢\n" and prompt.turns[3] == "4 C：没什么，就是觉得好玩\n"
    assert prompt.questions == ["1", "2", "3", "4"]
    assert "<Disgust, Anger, Sad, Happy, Neutral, Surprise, Fear>" in prompt.intro
    quoted = dialogue_prompt(DIALOGUES[0], PromptConfig(form="dialogue", question="quoted"))
    assert quoted.turns == prompt.turns and quoted.questions[1] == "2 B：义乌的"
    assert "重复其中一行" in quoted.intro and "<Disgust, Anger" in quoted.intro
    english = dialogue_prompt(DIALOGUES[0], PromptConfig(language="en", form="dialogue", question="quoted"))
    assert english.questions[3] == "4 C: 没什么，就是觉得好玩" and "one of its lines is repeated" in english.intro
    with pytest.raises(ValueError, match="dialogue form only"):
        PromptConfig(form="window", question="quoted")
    with pytest.raises(ValueError, match="dialogue form only"):
        PromptConfig(form="window", question="marker")
    with pytest.raises(ValueError, match="question must be one of"):
        PromptConfig(form="dialogue", question="both")


def reference(model, tokenizer, template, config, dialogue: Dialogue, max_length: int | None = None) -> np.ndarray:
    """log p(answer) from one unmasked, unpadded forward pass per (utterance, answer): the separate sequence."""
    result = np.full((len(dialogue), len(LABELS)), np.nan)
    for tree in dialogue_trees(dialogue, tokenizer, template, config, LABELS, max_length=max_length):
        for n, question in enumerate(tree.questions):
            context = chain_ids(tree, question)
            for k, answer in enumerate(tree.answers[n]):
                target = tree.segments[answer].ids
                assert max_length is None or len(context) + len(target) <= max_length
                with torch.no_grad():  # logits of the positions that predict the answer's tokens
                    logits = model(input_ids=torch.tensor([context + target]), logits_to_keep=len(target) + 1)
                log_probs = torch.log_softmax(logits.logits[0, :-1].float(), dim=-1)
                result[tree.utterances[n], k] = sum(float(log_probs[j, t]) for j, t in enumerate(target))
    return result


def tiny_gemma(tokenizer) -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, initializer_range=0.2,
    )
    return Gemma3ForCausalLM(config).eval()


DEFAULT_TIER = {("llama-sdpa", "centered", "number"), ("gemma3-sliding", "past", "quoted"),
                ("llama-eager", "centered", "marker")}  # the rest: integration
EVERY_MODEL_PLACEMENT_AND_QUESTION = [
    pytest.param(kind, placement, question, id=f"{kind}-{placement}-{question}",
                 marks=() if (kind, placement, question) in DEFAULT_TIER else pytest.mark.integration)
    for kind in ("llama-sdpa", "llama-eager", "gemma3-sliding")
    for placement in ("centered", "past")
    for question in ("number", "quoted", "marker")
]


@pytest.mark.parametrize(("kind", "placement", "question"), EVERY_MODEL_PLACEMENT_AND_QUESTION)
def test_packed_labels_equal_separate_sequences(kind: str, placement: str, question: str) -> None:
    tokenizer = tiny_tokenizer()
    if kind.startswith("llama"):
        model = tiny_model(tokenizer, attn_implementation=kind.split("-")[1])
        template = get_template("plain")
    else:
        model = tiny_gemma(tokenizer)
        template = get_template("gemma")
    config = PromptConfig(placement=placement, form="dialogue", question=question)
    packed = dialogue_log_probs(model, tokenizer, DIALOGUES, template, config, progress=False, max_tokens=10_000)
    expected = np.concatenate([reference(model, tokenizer, template, config, d) for d in DIALOGUES])
    assert packed.shape == (6, 7)
    assert np.abs(packed - expected).max() <= 1e-4
    # a max_length that cuts the first dialogue into chunks: still each label as its separate sequence
    [tree] = dialogue_trees(DIALOGUES[0], tokenizer, template, config)
    tail = max(len(tree.segments[q].ids) + max(len(tree.segments[a].ids) for a in answers)
               for q, answers in zip(tree.questions, tree.answers))
    limit = len(tree.segments[0].ids) + tail + 20  # room for about two turns
    chunked = dialogue_log_probs(model, tokenizer, DIALOGUES, template, config, progress=False, max_length=limit)
    assert len(dialogue_trees(DIALOGUES[0], tokenizer, template, config, max_length=limit)) > 1
    expected = np.concatenate([reference(model, tokenizer, template, config, d, limit) for d in DIALOGUES])
    assert not np.isnan(expected).any() and np.abs(chunked - expected).max() <= 1e-4
    # several dialogues in one row and one dialogue per row give the same numbers
    alone = dialogue_log_probs(model, tokenizer, DIALOGUES, template, config, progress=False, max_tokens=1)
    assert np.abs(alone - packed).max() <= 1e-4


def test_a_long_quoted_question_keeps_its_first_tokens_and_its_marker() -> None:
    """A quoted turn longer than a quarter of max_length is cut, not a reason to refuse the dialogue."""
    tokenizer, template = tiny_tokenizer(), get_template("gemma")
    config = PromptConfig(form="dialogue", question="quoted")
    long = Dialogue("d3", (Utterance("d3_1", "Ann", "好" * 300, "Sad"), Utterance("d3_2", "Bob", "嗯", "Neutral")))
    trees = dialogue_trees(long, tokenizer, template, config, max_length=200)
    questions = [tree.segments[q].ids for tree in trees for q in tree.questions]
    suffix = tokenizer(template.suffix, add_special_tokens=False)["input_ids"]
    assert len(questions) == 2 and len(questions[0]) == 50 and questions[0][-len(suffix):] == suffix
    assert questions[1] == tokenizer("2 B：嗯" + template.suffix, add_special_tokens=False)["input_ids"]
    assert all(len(chain_ids(tree, a)) <= 200 for tree in trees for answers in tree.answers for a in answers)


def test_a_label_does_not_see_the_others() -> None:
    """Changing one utterance's candidate answers leaves every other utterance's scores unchanged."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    template, config = get_template("plain"), PromptConfig()
    seven = dialogue_log_probs(model, tokenizer, DIALOGUES[:1], template, config, progress=False)
    two = dialogue_log_probs(model, tokenizer, DIALOGUES[:1], template, config, answers=LABELS[:2], progress=False)
    assert np.abs(seven[:, :2] - two).max() <= 1e-4


def separate_answer_losses(model, tokenizer, template, config, dialogue: Dialogue) -> list[tuple[str, list[float]]]:
    """(gold label, cross-entropy of each answer token) from one separate sequence per utterance."""
    [tree] = dialogue_trees(dialogue, tokenizer, template, config, gold=True)
    result = []
    for n, question in enumerate(tree.questions):
        context = chain_ids(tree, question)
        target = tree.segments[tree.answers[n][0]].ids
        logits = model(input_ids=torch.tensor([context + target]), logits_to_keep=len(target) + 1).logits
        log_probs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        result.append((dialogue.utterances[n].label, [-float(log_probs[j, t]) for j, t in enumerate(target)]))
    return result


@pytest.mark.parametrize("weighted", [pytest.param(False, marks=pytest.mark.integration), True])
def test_packed_training_loss_equals_separate_sequences(weighted: bool) -> None:
    tokenizer = tiny_tokenizer()
    model = tiny_gemma(tokenizer)
    template, config = get_template("gemma"), PromptConfig()
    weights = {label: 1.0 + i for i, label in enumerate(LABELS)} if weighted else None
    rows = training_rows(DIALOGUES, tokenizer, template, config, max_tokens=10_000, class_weights=weights)
    assert len(rows) == 1  # both dialogues packed into one row
    inputs = collate(rows, tokenizer.pad_token_id, torch.float32, sliding_window_of(model.config))
    with torch.no_grad():
        loss = float(packed_answer_loss(model, inputs))
        pairs = [p for d in DIALOGUES for p in separate_answer_losses(model, tokenizer, template, config, d)]
    w = [(weights[label] if weights else 1.0) for label, tokens in pairs for _ in tokens]
    ce = [c for _, tokens in pairs for c in tokens]
    assert abs(loss - sum(a * b for a, b in zip(w, ce)) / sum(w)) <= 1e-4
    # one row per dialogue gives the same loss terms, and the loss trains the model
    split = collate(training_rows(DIALOGUES, tokenizer, template, config, max_tokens=1, class_weights=weights),
                    tokenizer.pad_token_id, torch.float32, sliding_window_of(model.config))
    assert split["input_ids"].shape[0] == 2
    with torch.no_grad():
        assert abs(float(packed_answer_loss(model, split)) - loss) <= 1e-4
    model.train()
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    packed_answer_loss(model, split).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(before, model.model.layers[0].self_attn.q_proj.weight)
