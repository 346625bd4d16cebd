"""Label names in the data's own script: plots of Traditional Chinese data are labelled in Traditional."""

import json

from conftest import m3ed_file
from erckit.cli import main
from erckit.labels import CHINESE_NAMES, TRADITIONAL_CHINESE_NAMES, display_names
from erckit.plots import plot_confusion


def test_the_script_of_the_data_picks_the_label_names():
    assert display_names(["你怎么又迟到了？我们说好了", "这个给你"]) == CHINESE_NAMES
    assert display_names(["你怎麼又遲到了？我們說好了", "這個給你"]) == TRADITIONAL_CHINESE_NAMES
    assert display_names(["Guess what!", "What?", "好"]) is None
    assert TRADITIONAL_CHINESE_NAMES["Happy"] == "高興" and CHINESE_NAMES["Happy"] == "高兴"


def test_evaluate_on_traditional_chinese_data_writes_its_confusion_plot(tmp_path):
    labels = ["Happy", "Neutral", "Sad", "Anger"]
    texts = ["我們說好了，這次一定去", "你說什麼？", "對不起，我沒辦法", "為什麼又遲到了"]
    gold = m3ed_file(tmp_path / "annotation_test.json",
                     {"d1": [("A" if i % 2 else "B", t, l) for i, (t, l) in enumerate(zip(texts, labels))]})
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": f"d1_{i}", "label": l}) + "\n"
                             for i, l in enumerate(["Happy", "Neutral", "Neutral", "Anger"], start=1)))
    assert main(["evaluate", "--predictions", str(preds), "--gold", str(gold), "--out", str(tmp_path / "r")]) == 0
    written = (tmp_path / "r" / "confusion.png").read_bytes()
    assert written[:4] == b"\x89PNG"
    predicted = ["Happy", "Neutral", "Neutral", "Anger"]
    for names, same in ((TRADITIONAL_CHINESE_NAMES, True), (CHINESE_NAMES, False), (None, False)):
        plot_confusion(labels, predicted, tmp_path / "drawn.png", names=names)  # the plot with these tick labels
        assert ((tmp_path / "drawn.png").read_bytes() == written) is same, names
