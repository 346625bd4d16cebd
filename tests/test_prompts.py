from conftest import REFERENCE_DIALOGUE
from erckit.data import Dialogue, Utterance
from erckit.prompts import PromptConfig, build_prompt, same_speaker_examples, window_bounds

REFERENCE_PROMPT = (
    "现在，你是一名情感和情绪分析专家。下面这段标记在'### ###'间的对话涉及多个说话者。### "
    "<A：你笑什么？我在问你话呢> <B：义乌的> <A：义乌的怎么了> <B：没什么，就是觉得好玩> <A：你是不是又被人骗了> "
    "<B：没有，这次是真的> <A：上次你也这么说> <B：这次不一样，人家有营业执照> <A：营业执照也可以是假的> "
    "<A：好，你这，这个有可能是没有骗的>### 请从 <Disgust, Anger, Sad, Happy, Neutral, Surprise, Fear> 中选择 "
    "<你笑什么？我在问你话呢> 的情感标签，无需分析，直接给出结果即可。"
)


def dialogue(speakers_texts) -> Dialogue:
    return Dialogue("d", tuple(Utterance(f"u{i}", s, t, "Neutral") for i, (s, t) in enumerate(speakers_texts)))


def test_reference_prompt_verbatim():
    assert build_prompt(dialogue(REFERENCE_DIALOGUE), 0, PromptConfig()) == REFERENCE_PROMPT


def test_window_centered_stays_inside_and_past_ends_at_target():
    assert window_bounds(20, 0, 10, "centered") == (0, 10)
    assert window_bounds(20, 10, 10, "centered") == (6, 16)
    assert window_bounds(20, 19, 10, "centered") == (10, 20)
    assert window_bounds(4, 2, 10, "centered") == (0, 4)
    assert window_bounds(20, 3, 10, "past") == (0, 4)
    assert window_bounds(20, 15, 10, "past") == (6, 16)


def test_names_become_letters_in_order_of_first_appearance():
    d = dialogue([("Ross", "嗨"), ("Monica", "你好"), ("Ross", "吃了吗"), ("Joey", "还没")])
    prompt = build_prompt(d, 3, PromptConfig())
    assert "<A：嗨> <B：你好> <A：吃了吗> <C：还没>" in prompt


def test_english_template_and_speaker_variant():
    d = dialogue([("Ross", "Hi"), ("Monica", "Hello")])
    english = build_prompt(d, 1, PromptConfig(language="en"))
    assert "<A: Hi> <B: Hello>### Please select the emotional label of <Hello> from <Disgust" in english
    speaker = build_prompt(d, 1, PromptConfig(variant="speaker"))
    assert "选择说话者 B 所说的 <Hello> 的情感标签" in speaker


def test_past_window_shows_no_future():
    d = dialogue([("A", f"第{i}句") for i in range(12)])
    prompt = build_prompt(d, 5, PromptConfig(placement="past"))
    assert "第5句>###" in prompt and "第6句" not in prompt


def test_same_speaker_examples_are_correct_and_hide_speakers():
    d = dialogue(REFERENCE_DIALOGUE)
    examples = same_speaker_examples([d], PromptConfig(), per_dialogue=8, seed=1)
    assert len(examples) >= 6 and {e.answer for e in examples} == {"是", "否"}
    by_id = {u.id: u for u in d.utterances}
    for example in examples:
        first, second = (by_id[i] for i in example.id.split("~"))
        assert example.answer == ("是" if first.speaker == second.speaker else "否")
        assert "<A：" not in example.prompt and "<B：" not in example.prompt
