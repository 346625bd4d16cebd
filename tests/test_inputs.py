"""Every file erckit reads goes through one reader (`erckit.formats.encoding.read_bytes`): a FIFO, a device, a
folder, a file over its kind's limit or in a wrong encoding is refused with one line naming it, exit 2, and
nothing is written. Each kind of file × each bad kind."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SAMPLE, SAMPLE_DATA
from erckit.cli import main
from erckit.data import DataError
from erckit.formats import encoding, read_dialogues
from erckit.labels import LABELS, MELD_NAMES

LIMIT = 1 << 20  # every limit while a test runs: the good files are smaller, an oversize file larger
VALIDATION = SAMPLE / "annotation_validation.json"
BAD = {  # bad kind -> words of the refusal
    "fifo": "is not a regular file",
    "dev_zero": "is not a regular file",
    "folder": "is a folder",
    "oversize": "file limit",
    "encoding": "text (wrong encoding? save it as UTF-8)",
}


@pytest.fixture(autouse=True)
def small_limits(monkeypatch):
    for kind in encoding.LIMITS:
        monkeypatch.setitem(encoding.LIMITS, kind, LIMIT)


@pytest.fixture(autouse=True)
def no_hang():
    """A read that blocks on a FIFO fails the test instead of hanging it."""

    def stop(*_):
        raise TimeoutError("blocked reading an input")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def tfidf_model(tmp_path_factory) -> Path:
    from erckit.config import load_config
    from erckit.models import train

    folder = tmp_path_factory.mktemp("tfidf") / "model"
    train(load_config("tfidf", [f"out={folder}", *SAMPLE_DATA, "tfidf.ngram_max=1"]))
    return folder


def make_bad(path: Path, bad: str) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if bad == "fifo":
        os.mkfifo(path)
    elif bad == "dev_zero":
        path.symlink_to("/dev/zero")
    elif bad == "folder":
        path.mkdir()
    elif bad == "oversize":
        path.write_bytes(b"{}" + b" " * LIMIT)
    else:
        path.write_bytes(b'{"a": "\x80\xff"}\n')


def predictions_file(path: Path) -> Path:
    from erckit.data import iter_utterances
    from erckit.formats import read_dialogues

    ids = [u.id for u in iter_utterances(read_dialogues(VALIDATION))]
    path.write_text("".join(json.dumps({"id": i, "label": LABELS[0]}) + "\n" for i in ids), encoding="utf-8")
    return path


def prepared_file(path: Path) -> Path:
    from erckit.data import iter_utterances
    from erckit.formats import read_dialogues

    ids = [u.id for u in iter_utterances(read_dialogues(VALIDATION))]
    path.write_text(json.dumps([{"id": i, "instruction": f"Q {i}", "input": "", "output": ""} for i in ids]),
                    encoding="utf-8")
    return path


# each kind of file: (tmp_path, a trained tfidf model) -> (the file made bad, the command, its outputs)
Case = Callable[[Path, Path], tuple[Path, list[str], list[Path]]]


def recipe(tmp: Path, model: Path):
    target, out = tmp / "recipe.yaml", tmp / "run"
    return target, ["train", "--config", str(target), f"out={out}", *SAMPLE_DATA], [out]


def data_file(tmp: Path, model: Path):
    target, out = tmp / "gold.json", tmp / "report"
    return target, ["evaluate", "--predictions", str(predictions_file(tmp / "p.jsonl")), "--gold", str(target),
                    "--out", str(out)], [out]


def copied_model(tmp: Path, model: Path) -> Path:
    shutil.copytree(model, tmp / "model")
    return tmp / "model"


def model_file(name: str) -> Case:
    def case(tmp: Path, model: Path):
        folder, out = copied_model(tmp, model), tmp / "p.jsonl"
        return folder / name, ["predict", "--model", str(folder), "--input", str(VALIDATION), "--out", str(out)], [out]

    return case


def llm_record(tmp: Path, model: Path):
    folder, out = tmp / "llm", tmp / "p.jsonl"
    folder.mkdir()
    return folder / "erckit_llm.json", ["predict", "--model", str(folder), "--input", str(VALIDATION),
                                        "--out", str(out)], [out]


def prepared(tmp: Path, model: Path):
    target, out = tmp / "data_test.json", tmp / "labelled.json"
    generated = tmp / "generated_predictions.jsonl"
    generated.write_text(json.dumps({"prompt": "Q", "predict": "Happy"}) + "\n", encoding="utf-8")
    return target, ["combine", "--prepared", str(target), "--predictions", str(generated), "--raw", str(VALIDATION),
                    "--out", str(out)], [out]


def predictions_to(command: str) -> Case:
    def case(tmp: Path, model: Path):
        target, out = tmp / "p.jsonl", tmp / "out"
        args = {"evaluate": ["--gold", str(VALIDATION)], "combine": ["--raw", str(VALIDATION)],
                "calibrate": ["--validation", str(VALIDATION)]}[command]
        return target, [command, "--predictions", str(target), *args, "--out", str(out)], [out]

    return case


CASES: dict[str, Case] = {
    "recipe": recipe,
    "data file": data_file,
    "erckit_model.json": model_file("erckit_model.json"),
    "tfidf model file": model_file("tfidf.json"),
    "erckit_llm.json": llm_record,
    "prepared file": prepared,
    "predictions to evaluate": predictions_to("evaluate"),
    "predictions to combine": predictions_to("combine"),
    "predictions to calibrate": predictions_to("calibrate"),
}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("kind", list(CASES))
def test_a_bad_input_is_refused_in_one_line_and_nothing_is_written(kind, bad, tmp_path, tfidf_model, capsys):
    target, argv, outputs = CASES[kind](tmp_path, tfidf_model)
    make_bad(target, bad)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{target}: " in err and BAD[bad] in err, err
    assert not any(os.path.lexists(out) for out in outputs)


@pytest.mark.parametrize("bad", ["fifo", "dev_zero", "folder"])
def test_weights_must_be_a_regular_file(bad, tmp_path, tfidf_model, capsys):
    target, argv, outputs = model_file("tfidf.safetensors")(tmp_path, tfidf_model)
    make_bad(target, bad)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{target}: " in err and BAD[bad] in err, err
    assert not any(os.path.lexists(out) for out in outputs)


@pytest.mark.parametrize("bad", list(BAD))
def test_a_bad_resume_file_is_refused_and_kept(bad, tmp_path):
    from erckit.llm.items import Item
    from erckit.llm.predict import predict_items
    from erckit.llm.resume import partial_path

    out = tmp_path / "predictions.jsonl"
    partial = partial_path(out)
    make_bad(partial, bad)

    def backend():
        raise AssertionError("nothing is predicted from a bad resume file")

    with pytest.raises(DataError) as caught:
        predict_items([Item("d1_1", "a")], out, backend, settings={}, progress=False)
    assert str(caught.value).startswith(f"{partial}: ") and BAD[bad] in str(caught.value)
    assert "\n" not in str(caught.value) and not out.exists() and os.path.lexists(partial)


MELD_HEADER = b"Dialogue_ID,Utterance_ID,Speaker,Utterance\n"


@pytest.mark.parametrize(("body", "message"), [
    (b"0,0,A,I don\x92t know\n0,1,B,caf\xe9s and na\xefve\n",  # Excel's CSV on Western Windows
     "line 2: is not UTF-8 or GBK text: read as GBK its words hold single Chinese characters ('don抰')"),
    (b"0,0,A,hi\n\n\n0,x,B,yo\n", "line 5: Utterance_ID 'x' is not a whole number"),
])
def test_a_bad_csv_to_predict_names_the_file_line_and_problem(body, message, tmp_path, tfidf_model, capsys):
    path, out = tmp_path / "b.csv", tmp_path / "p.jsonl"
    path.write_bytes(MELD_HEADER + body)
    assert main(["predict", "--model", str(tfidf_model), "--input", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: {message}" in err, err
    assert not out.exists()


def test_a_csv_utterance_longer_than_csvs_field_limit_is_labelled(tmp_path, tfidf_model):
    path, out = tmp_path / "long.csv", tmp_path / "p.jsonl"
    path.write_bytes(MELD_HEADER + b'0,0,A,"' + b"so long " * 20_000 + b'"\n0,1,B,yo\n')  # 160,000 characters
    assert main(["predict", "--model", str(tfidf_model), "--input", str(path), "--out", str(out)]) == 0
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == [
        "dia0_utt0", "dia0_utt1"]


def test_a_sheet_being_labelled_reads_its_placeholders_as_no_label_and_predict_labels_it(tmp_path, tfidf_model):
    sheet = tmp_path / "todo.csv"
    sheet.write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion\n0,0,A,你好,joy\n0,1,B,嗯,待定\n0,2,A,走吧,?\n"
                     "0,3,B,好,TBD\n", encoding="utf-8")
    assert [u.label for u in read_dialogues(sheet)[0].utterances] == ["Happy", None, None, None]
    assert main(["predict", "--model", str(tfidf_model), "--input", str(sheet), "--out", str(tmp_path / "p.jsonl")]) == 0
    assert main(["combine", "--predictions", str(tmp_path / "p.jsonl"), "--raw", str(sheet), "--out",
                 str(tmp_path / "labelled.csv")]) == 0
    written = [line.rsplit(",", 1)[1] for line in (tmp_path / "labelled.csv").read_text(encoding="utf-8").splitlines()]
    assert written[0] == "Emotion" and set(written[1:]) <= set(MELD_NAMES.values())  # the sheet's own words (joy)
    sheet.write_text(sheet.read_text(encoding="utf-8").replace("待定", "待续"), encoding="utf-8")  # no placeholder
    with pytest.raises(DataError, match="line 3, utterance dia0_utt1: unknown label '待续'"):
        read_dialogues(sheet)
