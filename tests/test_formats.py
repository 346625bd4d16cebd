import json
from pathlib import Path

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


MELD_HEADER = "Dialogue_ID,Utterance_ID,Speaker,Utterance\n"


def test_a_windows_1252_csv_is_refused_not_read_as_gbk(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes((MELD_HEADER + "0,0,A,Hello there\n0,1,B,I don\x92t know\n0,2,A,caf\xe9s are na\xefve\n")
                     .encode("latin-1"))
    with pytest.raises(DataError) as caught:
        read_dialogues(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line 3: is not UTF-8 or GBK text") and "'don抰'" in message
    assert "Windows-1252" in message and "save it as UTF-8" in message and "\n" not in message


@pytest.mark.parametrize("texts", [
    ["你好吗我的朋友", "OK吧，走！", "Ross说：今天天气很好"],  # Latin next to Chinese, in runs
    ["A座", "sautéed 牛肉", "第一个A。", "我们可以玩3P。"],  # glued, but no second byte below 0x80
    ["Ross說", "你好吗我的朋友", "走吧"],  # 說 (GBK D5 66) glued to a letter: one run of three, not most
    ["Pages A–Z", "COVID–19"],  # a symbol (– is GBK A8 43), not an ideograph: never counted
])
def test_gbk_chinese_with_latin_letters_is_still_read(texts, tmp_path):
    path = tmp_path / "gbk.csv"
    rows = "".join(f"0,{i},A,{t}\n" for i, t in enumerate(texts))
    path.write_bytes((MELD_HEADER + rows).encode("gbk"))
    assert [u.text for u in read_dialogues(path)[0].utterances] == texts


def test_a_csv_field_may_be_longer_than_csvs_default_limit(tmp_path):
    path = tmp_path / "long.csv"
    long_text = "la " * 70_000  # 210,000 characters, over csv's 131,072
    path.write_text(MELD_HEADER + f'0,0,A,"{long_text}"\n0,1,B,ok\n', encoding="utf-8")
    assert [len(u.text) for u in read_dialogues(path)[0].utterances] == [len(long_text.strip()), 2]


NOT_A_NUMBER = ("Utterance_ID 'x' is not a whole number (a MELD-style CSV numbers its dialogues and turns; for ids "
                "of your own, write JSON lines)")


@pytest.mark.parametrize(("body", "where", "problem"), [
    ("0,0,A,hi\n\n\n0,x,B,yo\n", "line 5", NOT_A_NUMBER),
    ('0,0,A,"two\nlines"\n0,1,B\n', "line 4", "has 3 fields, the header has 4"),
    ('0,0,A,"two\r\nlines"\r\n\r\n0,1,B,x,y\r\n', "line 5", "has 5 fields, the header has 4"),
    ('0,0,A,hi\n0,1,"B\nC",yo\n0,x,B,yo\n', "line 5", NOT_A_NUMBER),
    ("0,0,A,hi\n\n0,1, ,yo\n", "line 4, utterance dia0_utt1", "empty Speaker"),
])
def test_csv_errors_name_the_file_line_where_the_row_starts(body, where, problem, tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes((MELD_HEADER + body).encode())
    with pytest.raises(DataError) as caught:
        read_dialogues(path)
    assert str(caught.value) == f"{path}: {where}: {problem}"


def test_the_docs_json_lines_example_reads_as_saved(tmp_path):
    docs = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text(encoding="utf-8")
    example = docs.split("**erckit JSON lines**", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.jsonl"
    path.write_text(example, encoding="utf-8")
    dialogues = read_dialogues(path)
    assert dialogues[0].utterances[0].label == "Surprise" and len(dialogues[0].utterances) == 2


DIALOGUE = {"id": "d1", "utterances": [{"id": "u1", "speaker": "Ann", "text": "Hi!"},
                                       {"id": "u2", "speaker": "Bob", "text": "Yo."}]}


@pytest.mark.parametrize(("text", "where"), [
    (json.dumps(DIALOGUE, indent=2) + "\n", "line 1"),  # one dialogue, pretty-printed
    (json.dumps(DIALOGUE, indent=2) + "\n" + json.dumps({**DIALOGUE, "id": "d2"}, indent=2) + "\n", "line 1"),
    (json.dumps(DIALOGUE).replace('}, {', '},\n {') + "\n", "line 1"),  # wrapped, as the docs' example was
    (json.dumps(DIALOGUE) + "\n" + json.dumps(DIALOGUE, indent=1), "line 2"),
])
def test_pretty_printed_json_lines_get_a_hint(text, where, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_dialogues(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {where}: malformed JSON: ") and "\n" not in message
    assert message.endswith("; JSON lines need one dialogue per line, this one goes on below (pretty-printed?)")


@pytest.mark.parametrize("text", ['{"id": "d1", "utterances": [{"id": "u1", "speaker": "A", "text": "hi"}]}\n{"id": "d2", "utter',
                                  '{"id": "d1", "utterances": [}\n{"id": "d2", "utterances": []}\n'])
def test_other_malformed_json_lines_get_no_hint(text, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="malformed JSON") as caught:
        read_dialogues(path)
    assert "pretty-printed" not in str(caught.value)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("annotation_test.json", '{"Show": {"d1": {"Dialog": {"u1": {"Speaker": "A", "Text": "hi',
     "line 1 column 60: malformed JSON: Unterminated string"),
    ("d.jsonl", '{"id": "d1", "utterances": [{"id": "u1", "speaker": "A", "text": "h\ti"}]}\n',
     "line 1 column 68: malformed JSON: Invalid control character"),
])
def test_a_malformed_json_message_ends_with_its_problem(name, text, message, tmp_path):
    """The parser's "... starting at" is cut: the place is named beside the problem."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_dialogues(path)
    assert str(caught.value) == f"{path}: {message}"


@pytest.mark.parametrize(("text_column", "problem"), [
    ("Nope", "no column 'Nope'"),
    (None, "no text column (Target or Utterance; name another with --text-column)"),
])
def test_a_missing_text_column_is_named_with_the_files_columns(text_column, problem, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("Dialogue_ID,Utterance_ID,Speaker,Line\n0,0,A,hi\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_dialogues(path, text_column=text_column)
    assert str(caught.value) == f"{path}: header: {problem}; its columns: Dialogue_ID, Utterance_ID, Speaker, Line"
    assert read_dialogues(path, text_column="Line")[0].utterances[0].text == "hi"


def test_a_spreadsheets_csv_reads_as_meld_with_lower_case_headers_and_float_numbers(tmp_path):
    """A sheet exported by a spreadsheet: headers in another case, numbers as floats (3.0), the text column named
    in any case; read exactly as the MELD spelling."""
    meld = tmp_path / "meld.csv"
    meld.write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion\n0,1,B,ho,sadness\n0,0,A,hi,joy\n",
                    encoding="utf-8")
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("dialogue_id,UTTERANCE_ID,speaker,utterance,emotion\n0.0,1.0,B,ho,sadness\n0,0,A,hi,joy\n",
                     encoding="utf-8")
    assert read_dialogues(sheet) == read_dialogues(meld)
    assert read_dialogues(sheet, text_column="Utterance") == read_dialogues(meld, text_column="utterance")
    assert [u.id for u in read_dialogues(sheet)[0].utterances] == ["dia0_utt0", "dia0_utt1"]
