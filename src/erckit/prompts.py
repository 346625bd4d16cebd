"""The reference pipeline's instruction prompts: a dialogue window, the target utterance, the label question.

The Chinese template reproduces the reference pipeline's prompt character for character; an English one serves English data.
Variants: `emotion` (the reference pipeline's), `speaker` (the question names the target's speaker) and the
auxiliary same-speaker task (is utterance X said by the same speaker as utterance Y?).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from erckit.data import Dialogue, speaker_letters
from erckit.labels import LABELS, mostly_chinese

PLACEMENTS = ("centered", "past")
VARIANTS = ("emotion", "speaker")
FORMS = ("window", "dialogue")
QUESTIONS = ("number", "quoted", "marker")


@dataclass(frozen=True)
class Template:
    """The pieces of a prompt; `{…}` fields are filled in by `build_prompt`."""

    intro: str
    turn: str
    bare_turn: str
    emotion_question: str
    speaker_question: str
    same_speaker_question: str
    yes: str
    no: str
    dialogue_intro: str = ""
    numbered_turn: str = ""
    dialogue_question: str = ""
    quoted_dialogue_intro: str = ""
    marked_turn: str = ""
    marked_dialogue_intro: str = ""
    marker: str = " [{number}]"  # ends each line with `question: marker`, and is its question (the space keeps
    # a line's last punctuation from merging into the marker's first token: "。[" is one token for gemma)


TEMPLATES: dict[str, Template] = {
    "zh": Template(
        intro="现在，你是一名情感和情绪分析专家。下面这段标记在'### ###'间的对话涉及多个说话者。### ",
        turn="<{speaker}：{text}>",
        bare_turn="<{text}>",
        emotion_question="### 请从 <{labels}> 中选择 <{target}> 的情感标签，无需分析，直接给出结果即可。",
        speaker_question="### 请从 <{labels}> 中选择说话者 {speaker} 所说的 <{target}> 的情感标签，无需分析，直接给出结果即可。",
        same_speaker_question="### 请判断 <{first}> 和 <{second}> 是否由同一个说话者说出，无需分析，直接回答“是”或“否”。",
        yes="是",
        no="否",
        dialogue_intro=(
            "下面是一段多人对话，每行是编号、说话者和句子。对话后给出编号，请从 <{labels}> 中选择该句的情感标签，"
            "直接给出结果。\n"
        ),
        numbered_turn="{number} {speaker}：{text}\n",
        dialogue_question="{number}",
        quoted_dialogue_intro=(
            "下面是一段多人对话，每行是编号、说话者和句子。对话后重复其中一行，请从 <{labels}> 中选择该句的情感标签，"
            "直接给出结果。\n"
        ),
        marked_turn="{speaker}：{text}{marker}\n",
        marked_dialogue_intro=(
            "下面是一段多人对话，每行是说话者和句子，行末是方括号中的编号。对话后给出编号，请从 <{labels}> 中选择该句的"
            "情感标签，直接给出结果。\n"
        ),
    ),
    "en": Template(
        intro=(
            "Now you are an expert in sentiment and emotion analysis. The following conversation noted "
            "between '### ###' involves several speakers. ### "
        ),
        turn="<{speaker}: {text}>",
        bare_turn="<{text}>",
        emotion_question=(
            "### Please select the emotional label of <{target}> from <{labels}>. "
            "Answer directly, without analysis."
        ),
        speaker_question=(
            "### Please select the emotional label of <{target}>, said by speaker {speaker}, from <{labels}>. "
            "Answer directly, without analysis."
        ),
        same_speaker_question=(
            "### Were <{first}> and <{second}> said by the same speaker? Answer directly with Yes or No."
        ),
        yes="Yes",
        no="No",
        dialogue_intro=(
            "Below is a conversation between several speakers, one line per utterance: number, speaker, text. "
            "After it comes a number: select the emotional label of that utterance from <{labels}>. "
            "Answer directly.\n"
        ),
        numbered_turn="{number} {speaker}: {text}\n",
        dialogue_question="{number}",
        quoted_dialogue_intro=(
            "Below is a conversation between several speakers, one line per utterance: number, speaker, text. "
            "After it, one of its lines is repeated: select the emotional label of that utterance from <{labels}>. "
            "Answer directly.\n"
        ),
        marked_turn="{speaker}: {text}{marker}\n",
        marked_dialogue_intro=(
            "Below is a conversation between several speakers, one line per utterance: speaker, text, and the "
            "line's number in brackets at its end. After it comes a number: select the emotional label of that "
            "utterance from <{labels}>. Answer directly.\n"
        ),
    ),
}


def setting(default, help: str, choices: tuple | None = None, shown: str | None = None, applies: tuple = ()):
    """A declared setting: its default, help text and choices (the CLI flags and checks are derived from them);
    `shown`: how help names the default when it is not the value itself (e.g. "detected from the text");
    `applies`: the cases it means something for, when not all (e.g. the backends of an engine setting)."""
    return field(default=default, metadata={"help": help, "choices": choices, "shown": shown, "applies": applies})


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are built: template language, window size and placement, variant, and form.

    The one declaration of the prompt settings: the recipe's `llm.prompt` (`erckit.config.PromptSettings`),
    the run record (`erckit.llm.record`) and the CLI flags (`erckit.flags`) are derived from these fields.
    `form`: `window` is the reference pipeline's (one prompt per utterance, holding a window of the dialogue);
    `dialogue` writes each dialogue once and asks one short question per utterance
    (`dialogue_prompt`, `erckit.llm.dialogue_form`); `window` and `variant` apply to the window form,
    `question` to the dialogue form.
    """

    language: str = setting("zh", "prompt template language", tuple(TEMPLATES), "detected from the text")
    window: int = setting(10, "window form: utterances in the dialogue window")
    placement: str = setting(
        "centered", "centered: around the target, kept inside the dialogue (the reference pipeline's); past: target "
        "last (dialogue form: a question sees no later turn)", PLACEMENTS)
    variant: str = setting(
        "emotion", "window form: emotion (the reference pipeline's prompt) or speaker (the question names the "
        "speaker)", VARIANTS)
    form: str = setting(
        "window", "window: the reference pipeline's prompt, one per utterance; dialogue: the whole dialogue once, "
        "then each utterance's question", FORMS)
    question: str = setting(
        "number", "dialogue form: number (the utterance's number alone), quoted (its whole line again: easier "
        "to read, about 1.5x the tokens) or marker (each line ends with its number, and the question repeats "
        "that marker: a number question pointing at the end of its line)", QUESTIONS)

    def __post_init__(self) -> None:
        for item in fields(PromptConfig):
            value, choices = getattr(self, item.name), item.metadata["choices"]
            if choices and value not in choices:
                raise ValueError(f"{item.name} must be one of {choices}, not {value!r}")
        if self.window < 1:
            raise ValueError(f"window must be at least 1, not {self.window}")
        if self.form == "window" and self.question != "number":
            raise ValueError(f"question {self.question!r} exists in the dialogue form only (form is 'window')")
        if self.form == "dialogue" and self.variant != "emotion":
            raise ValueError(f"variant {self.variant!r} exists in the window form only (form is 'dialogue')")


@dataclass(frozen=True)
class Example:
    """One instruction example: the utterance (or task) id, the prompt and the expected answer."""

    id: str
    prompt: str
    answer: str


def window_bounds(length: int, index: int, size: int, placement: str) -> tuple[int, int]:
    """[start, end) of the window holding utterance `index` of a dialogue of `length`.

    `centered`: `size` utterances around the target, shifted to stay inside the dialogue, so the
    first utterance gets the first `size` (the reference pipeline's example). `past`: the target and the
    `size - 1` utterances before it, nothing after (for live use).
    """
    if placement == "past":
        return max(0, index - size + 1), index + 1
    start = min(max(0, index - (size - 1) // 2), max(0, length - size))
    return start, min(length, start + size)


def detect_language(dialogues: Iterable[Dialogue]) -> str:
    """'zh' when most utterances contain CJK characters, else 'en'."""
    return "zh" if mostly_chinese([u.text for d in dialogues for u in d.utterances]) else "en"


def build_prompt(dialogue: Dialogue, index: int, config: PromptConfig) -> str:
    """The emotion prompt for utterance `index` of `dialogue`."""
    template = TEMPLATES[config.language]
    letters = speaker_letters(dialogue)
    start, end = window_bounds(len(dialogue), index, config.window, config.placement)
    turns = " ".join(
        template.turn.format(speaker=letters[u.speaker], text=u.text) for u in dialogue.utterances[start:end]
    )
    target = dialogue.utterances[index]
    question = template.speaker_question if config.variant == "speaker" else template.emotion_question
    return template.intro + turns + question.format(
        labels=", ".join(LABELS), target=target.text, speaker=letters[target.speaker]
    )


def emotion_examples(dialogues: Iterable[Dialogue], config: PromptConfig, *, last_only: bool = False) -> list[Example]:
    """One example per utterance, in file order (`last_only`: each dialogue's last, for live labelling); the
    answer is the gold label word ('' if unknown).

    In the dialogue form the prompt is the text of the utterance's separate sequence (the dialogue
    once, then its question): what a tool without erckit's packing (LLaMA-Factory) trains on.
    """
    examples = []
    for dialogue in dialogues:
        whole = dialogue_prompt(dialogue, config) if config.form == "dialogue" else None
        for i in [len(dialogue) - 1] if last_only else range(len(dialogue)):
            text = whole.text(i, config.placement) if whole else build_prompt(dialogue, i, config)
            examples.append(Example(dialogue.utterances[i].id, text, dialogue.utterances[i].label or ""))
    return examples


def same_speaker_examples(
    dialogues: Iterable[Dialogue], config: PromptConfig, per_dialogue: int, seed: int = 0
) -> list[Example]:
    """The auxiliary task: `per_dialogue` questions per dialogue, half same-speaker, speakers hidden."""
    template = TEMPLATES[config.language]
    rng = random.Random(seed)
    examples = []
    for dialogue in dialogues:
        speakers = {u.speaker for u in dialogue.utterances}
        if len(dialogue) < 2 or len(speakers) < 2:
            continue
        for k in range(per_dialogue):
            i = rng.randrange(len(dialogue))
            start, end = window_bounds(len(dialogue), i, config.window, config.placement)
            first = dialogue.utterances[i]
            want_same = k % 2 == 0
            candidates = [
                u for u in dialogue.utterances[start:end]
                if u is not first and (u.speaker == first.speaker) == want_same
            ]
            if not candidates:
                continue
            second = rng.choice(candidates)
            turns = " ".join(template.bare_turn.format(text=u.text) for u in dialogue.utterances[start:end])
            question = template.same_speaker_question.format(first=first.text, second=second.text)
            answer = template.yes if first.speaker == second.speaker else template.no
            examples.append(Example(f"{first.id}~{second.id}", template.intro + turns + question, answer))
    return examples


@dataclass(frozen=True)
class DialoguePrompt:
    """The dialogue form: the instruction, each turn once (numbered), and one short question per utterance.

    A model reads `intro`, then `turns` (all of them for the centred placement, the turns up to the
    target for `past`), then the target's question, and answers with its label.
    """

    intro: str
    turns: list[str]
    questions: list[str]

    def text(self, index: int, placement: str) -> str:
        """The whole text a model reads before answering for utterance `index` (a separate sequence)."""
        seen = self.turns if placement == "centered" else self.turns[: index + 1]
        return self.intro + "".join(seen) + self.questions[index]


def dialogue_prompt(dialogue: Dialogue, config: PromptConfig) -> DialoguePrompt:
    """The dialogue-form texts of `dialogue`: one numbered line per turn, and per utterance a question that
    is its number alone (`question: number`) or its numbered line again (`quoted`); with `marker`, each line
    ends with its number in brackets and the question is that marker, so the question's tokens repeat the
    ones right after the line they ask about (where a causal model has just read it).

    Kept short on purpose (it is read once per dialogue and once per utterance): the markers cost about
    5 tokens a turn and 2-3 a number question with gemma's tokenizer (BENCHMARKS.md, tokens per epoch).
    """
    template = TEMPLATES[config.language]
    letters = speaker_letters(dialogue)
    labels = ", ".join(LABELS)
    markers = [template.marker.format(number=n) for n in range(1, len(dialogue) + 1)]
    line = template.marked_turn if config.question == "marker" else template.numbered_turn
    turns = [line.format(number=n, speaker=letters[u.speaker], text=u.text, marker=markers[n - 1])
             for n, u in enumerate(dialogue.utterances, start=1)]
    if config.question == "marker":
        return DialoguePrompt(template.marked_dialogue_intro.format(labels=labels), turns, markers)
    if config.question == "quoted":
        return DialoguePrompt(template.quoted_dialogue_intro.format(labels=labels), turns,
                              [turn.rstrip("\n") for turn in turns])
    questions = [template.dialogue_question.format(number=n) for n in range(1, len(dialogue) + 1)]
    return DialoguePrompt(template.dialogue_intro.format(labels=labels), turns, questions)
