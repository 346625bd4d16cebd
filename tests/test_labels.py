import pytest

from erckit.labels import LABELS, normalize_label, parse_answer


def test_label_order_is_the_reference_pipelines():
    assert LABELS == ("Disgust", "Anger", "Sad", "Happy", "Neutral", "Surprise", "Fear")


@pytest.mark.parametrize(
    ("alias", "label"),
    [("joy", "Happy"), ("Happiness", "Happy"), ("SADNESS", "Sad"), ("angry", "Anger"), ("anger", "Anger"),
     ("surprised", "Surprise"), ("disgusted", "Disgust"), ("fearful", "Fear"), ("scared", "Fear"),
     ("neutral", "Neutral"), ("Neutral", "Neutral"), ("高兴", "Happy"), ("恐惧", "Fear"),
     ("噁心", "Disgust"), ("「高兴」", "Happy"), ("『Sad』", "Sad"), ("Ｈａｐｐｙ", "Happy"), ("ＦＥＡＲ", "Fear")],
)
def test_aliases_case_insensitive(alias, label):
    assert normalize_label(alias) == label


def test_traditional_chinese_label_words_are_read_like_the_simplified_ones(tmp_path):
    from conftest import m3ed_file
    from erckit.formats import read_dialogues
    from erckit.labels import TRADITIONAL_CHINESE_NAMES

    assert {name: normalize_label(word) for name, word in TRADITIONAL_CHINESE_NAMES.items()} == {n: n for n in LABELS}
    path = m3ed_file(tmp_path / "annotation_train.json", {"d1": [("A", "太好了", "高興"), ("B", "走開", "生氣")]})
    assert [u.label for d in read_dialogues(path) for u in d.utterances] == ["Happy", "Anger"]


def test_unknown_label_is_none():
    assert normalize_label("Happyy") is None
    assert normalize_label("") is None


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("Happy", "Happy"),
        ("Happy.", "Happy"),
        ("  happy！", "Happy"),
        ("<Sad>", "Sad"),
        ("“Fear”。", "Fear"),
        ("悲伤", "Sad"),
        ("情感标签：愤怒", "Anger"),
        ("The emotion is Surprise.", "Surprise"),
        ("Label: Disgust", "Disgust"),
        ("答案是 Neutral", "Neutral"),
        ("He is sad, very sad", "Sad"),
        ("", None),
        (None, None),
        ("我不知道", None),
        ("Happy or Sad", None),  # two labels named: ambiguous, never guessed
        ("Unhappy", None),  # not a whole word
        ("情绪：不高兴", None),  # a denied label word: which label is meant is not said
        ("没有惊讶", None),
        ("I am not happy", None),
        ("Happy, not sad", None),
        ("有点生气", "Anger"),
        ("不太高兴", None),
        ("isn’t happy", None),  # a typographic apostrophe
        ("not at all happy", None),
        ("no anger", None),
        ("不是很确定，但是高兴", "Happy"),  # the denial is of something else
        ("I am not sure, but happy", "Happy"),
        ("情绪：「愤怒」", "Anger"),
        ("Ｓｕｒｐｒｉｓｅ", "Surprise"),
    ],
)
def test_parse_answer_table(answer, label):
    assert parse_answer(answer) == label


def test_the_docs_table_of_label_words_is_what_is_read():
    from pathlib import Path

    from erckit.labels import _TO_TRADITIONAL, ALIASES, read_label

    docs = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text(encoding="utf-8")
    table = docs.split("| label | also read as |\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
    rows = {row.split(" | ")[0].strip("| "): row.split(" | ")[1].strip(" |").split(", ") for row in table.splitlines()}
    assert list(rows) == list(LABELS)
    for label, words in rows.items():
        assert all(read_label(word, "docs", None) == label for word in words), label
    listed = {word for words in rows.values() for word in words}
    assert set(ALIASES) == listed | {word.translate(_TO_TRADITIONAL) for word in listed}  # each also in Traditional


def test_the_docs_list_of_not_yet_labelled_marks_is_what_is_read():
    from pathlib import Path

    from erckit.labels import NOT_YET_LABELLED, not_yet_labelled

    docs = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text(encoding="utf-8")
    listed = docs.split("blank, or one of ", 1)[1].split(" (in any case", 1)[0]
    marks = [mark.strip("`") for mark in listed.replace("\n", " ").split(", ")]
    assert marks == list(NOT_YET_LABELLED) and all(not_yet_labelled(mark.upper()) for mark in marks)
    assert not not_yet_labelled("neutral") and not_yet_labelled(" ") and not_yet_labelled(None)

