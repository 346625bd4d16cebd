"""A resume file (`<out>.partial`) is validated like any input: a bad line stops the run, naming the file and
line, and nothing is written."""

from __future__ import annotations

import json

import pytest

from erckit.data import DataError
from erckit.labels import LABELS
from erckit.llm.items import Item
from erckit.llm.predict import predict_items
from erckit.llm.resume import PARTIAL_FORMAT, Outcome, partial_path, read_partial

SETTINGS = {"backend": "score"}
ITEMS = [Item("d1_1", "a"), Item("d1_2", "b")]
PROBS = {label: 1 / len(LABELS) for label in LABELS}


def write_partial(path, lines: list[str]) -> None:
    header = json.dumps({"erckit_partial": PARTIAL_FORMAT, "settings": SETTINGS})
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")


def test_valid_lines_resume(tmp_path):
    partial = tmp_path / "p.partial"
    write_partial(partial, [json.dumps({"id": "d1_1", "label": "Happy", "probs": PROBS}),
                            json.dumps({"id": "d1_2", "label": None, "raw": "hmm"})])
    done = read_partial(partial, SETTINGS, {"d1_1", "d1_2"})
    assert done == {"d1_1": Outcome("Happy", PROBS), "d1_2": Outcome(None, raw="hmm")}


BAD_LINES = [
    ({"id": "d1_1", "label": "Bored"}, "unknown label 'Bored'"),
    ({"id": "d1_1", "label": "Happy", "probs": {k: v * 0.98 for k, v in PROBS.items()}}, "sum to 0.98"),
    ({"id": "d1_1", "label": "Happy", "probs": {k: v for k, v in PROBS.items() if k != "Sad"}}, "lacks Sad"),
    ({"label": "Happy"}, 'has no "id"'),
    (["d1_1", "Happy"], "expected a JSON object"),
    ({"id": "x9", "label": "Happy"}, "id 'x9' is not among the inputs"),
    ({"id": "d1_1", "label": "Happy", "probs": PROBS | {"Happy": float("nan")}}, "not a probability"),
    ({"id": "d1_1", "label": None}, "null label"),
    ({"id": "d1_1", "label": None, "raw": "x", "probs": PROBS}, "null label"),
    ({"id": "d1_1", "label": "Happy", "raw": 3}, '"raw" must be a string'),
]


@pytest.mark.parametrize(("record", "message"), BAD_LINES)
def test_a_bad_resumed_line_stops_the_run_and_writes_nothing(record, message, tmp_path):
    out = tmp_path / "predictions.jsonl"
    partial = partial_path(out)
    write_partial(partial, [json.dumps({"id": "d1_2", "label": "Sad"}), json.dumps(record)])
    before = partial.read_bytes()

    def backend():
        raise AssertionError("nothing is predicted from a bad resume file")

    with pytest.raises(DataError) as caught:
        predict_items(ITEMS, out, backend, settings=SETTINGS, progress=False)
    text = str(caught.value)
    assert text.startswith(f"{partial}: line 3") and message in text and "\n" not in text
    assert not out.exists() and partial.read_bytes() == before


@pytest.mark.parametrize(("lines", "message"), [
    ([json.dumps({"id": "d1_1", "label": "Sad"})] * 2, "line 3: duplicate id 'd1_1'"),
    (['{"id": "d1_1", "label": "Sad"'], "line 2: malformed JSON"),
])
def test_duplicate_and_malformed_lines(lines, message, tmp_path):
    partial = tmp_path / "p.partial"
    write_partial(partial, lines)
    with pytest.raises(DataError, match=message):
        read_partial(partial, SETTINGS, {"d1_1", "d1_2"})


def test_invalid_utf8_names_the_line(tmp_path):
    partial = tmp_path / "p.partial"
    write_partial(partial, [json.dumps({"id": "d1_1", "label": "Sad"})])
    partial.write_bytes(partial.read_bytes() + b'{"id": "d1_2", "label": "\xff"}\n')
    with pytest.raises(DataError, match="line 3.*not utf-8 text"):
        read_partial(partial, SETTINGS, {"d1_1", "d1_2"})


def nan_from(batch_number: int):
    """A scoring backend (one item a batch) whose label scores are NaN from its `batch_number`th batch on,
    as a model's are when it overflows in fp16."""
    import numpy as np

    from erckit.llm.backends import Backend

    calls = []

    def log_probs(items):
        calls.append(items)
        values = np.log(np.full((len(items), len(LABELS)), 1 / len(LABELS)))
        return values * np.nan if len(calls) >= batch_number else values

    return Backend("score", lambda items, size: [[i] for i in range(len(items))], log_probs)


def test_nan_label_scores_stop_the_run_keeping_only_numbers(tmp_path):
    out = tmp_path / "predictions.jsonl"
    partial = partial_path(out)
    with pytest.raises(ValueError, match=r"not numbers \(NaN, or -inf for every label\) for 1 of 1 utterances "
                                         r".*first: d1_2.*--dtype.*kept in .*predictions.jsonl.partial: delete it"):
        predict_items(ITEMS, out, nan_from(2), settings=SETTINGS, batch_size=1, progress=False)
    assert not out.exists()
    kept = partial.read_text(encoding="utf-8").splitlines()
    assert len(kept) == 2 and json.loads(kept[1])["id"] == "d1_1"  # the header and the first batch's numbers
    predict_items(ITEMS, out, nan_from(99), settings=SETTINGS, batch_size=1, progress=False)  # resumed
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["d1_1", "d1_2"]


def test_nan_in_the_first_batch_leaves_no_file(tmp_path):
    out = tmp_path / "predictions.jsonl"
    with pytest.raises(ValueError, match="not numbers") as caught:
        predict_items(ITEMS, out, nan_from(1), settings=SETTINGS, batch_size=1, progress=False)
    assert "kept in" not in str(caught.value) and list(tmp_path.iterdir()) == []  # no output, no partial file, no lock: a rerun with other settings starts clean
