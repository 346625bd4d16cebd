import json

import pytest

from conftest import BMELD, MELD, m3ed_file
from erckit.data import DataError
from erckit.formats import detect_format, read_dialogues


@pytest.mark.needs_data
@pytest.mark.parametrize(
    ("folder", "split", "dialogues", "utterances"),
    [
        (BMELD, "train", 1036, 9987), (BMELD, "dev", 108, 1084), (BMELD, "test", 274, 2601),
        (MELD, "train", 1038, 9989), (MELD, "dev", 114, 1109), (MELD, "test", 280, 2610),
    ],
)
def test_reads_real_meld_and_bmeld(folder, split, dialogues, utterances):
    read = read_dialogues(folder / f"{split}_sent_emo.csv")
    assert len(read) == dialogues
    assert sum(len(d) for d in read) == utterances
    assert all(u.label is not None for d in read for u in d.utterances)


@pytest.mark.needs_data
def test_bmeld_reads_chinese_target_by_default_and_english_on_request():
    chinese = read_dialogues(BMELD / "dev_sent_emo.csv")
    english = read_dialogues(BMELD / "dev_sent_emo.csv", text_column="Utterance")
    assert chinese[0].utterances[0].id == english[0].utterances[0].id
    assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese[0].utterances[0].text)
    assert chinese[0].utterances[0].text.isascii() is False and english[0].utterances[0].text.isascii()


@pytest.mark.needs_data
def test_meld_label_words_are_mapped():
    labels = {u.label for d in read_dialogues(MELD / "dev_sent_emo.csv") for u in d.utterances}
    assert labels == {"Disgust", "Anger", "Sad", "Happy", "Neutral", "Surprise", "Fear"}


def test_m3ed_reads_speakers_text_labels(reference_file):
    dialogues = read_dialogues(reference_file)
    assert [d.id for d in dialogues] == ["Yiwu_1", "Yiwu_2"]
    first = dialogues[0].utterances[0]
    assert (first.id, first.speaker, first.text, first.label) == ("Yiwu_1_1", "A", "你笑什么？我在问你话呢", "Happy")


def test_m3ed_test_file_without_labels(tmp_path):
    path = m3ed_file(tmp_path / "annotation_test.json", {"d1": [("A", "你好", None), ("B", "嗯", None)]})
    assert [u.label for u in read_dialogues(path)[0].utterances] == [None, None]


def test_jsonl_format_and_detection(tmp_path):
    path = tmp_path / "dialogues.jsonl"
    rows = [
        {"id": "d1", "utterances": [{"id": "u1", "speaker": "Ann", "text": "Hi!", "label": "joy"},
                                    {"id": "u2", "speaker": "Bob", "text": "Hello."}]},
        {"id": "d2", "utterances": [{"id": "u3", "speaker": "Ann", "text": "Bye", "label": "sad"}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    dialogues = read_dialogues(path)
    assert [(u.id, u.label) for d in dialogues for u in d.utterances] == [("u1", "Happy"), ("u2", None), ("u3", "Sad")]


def test_detect_format():
    assert detect_format('{"show": {}}') == "m3ed"
    assert detect_format('{"id": 1, "utterances": []}\n{"id": 2, "utterances": []}\n') == "jsonl"
    assert detect_format("Sr No.,Utterance,Speaker\n") == "csv"


def test_format_override_wins(reference_file):
    with pytest.raises(DataError, match="missing column"):
        read_dialogues(reference_file, "csv")


def test_a_text_column_for_a_file_that_is_not_csv_is_refused(tmp_path):
    path = m3ed_file(tmp_path / "annotation_test.json", {"d1": [("A", "你好", None)]})
    with pytest.raises(DataError, match=r"annotation_test.json: is not CSV \(m3ed\): a text column .* remove it$"):
        read_dialogues(path, text_column="Target")
    assert read_dialogues(path)[0].utterances[0].text == "你好"
