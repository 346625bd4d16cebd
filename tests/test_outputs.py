"""The output rule (erckit.atomic): no output replaces an input, links are written through, special
files are refused, modes are kept, killed runs leave nothing behind, folder outputs appear whole."""

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLE, SAMPLE_DATA, m3ed_file
from erckit.cli import main
from erckit.labels import LABELS
from erckit.predictions import Prediction, write_predictions

GOOD = [("A", "你好", "Happy"), ("B", "嗯", "Neutral")]
IDS = ["d1_1", "d1_2"]


def probs(top: str) -> dict:
    return {label: 0.4 if label == top else 0.1 for label in LABELS}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tfidf_model(tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("tfidf") / "model"
    assert main(["train", "--config", "tfidf", f"out={model}", *SAMPLE_DATA,
                 "data.validation=null"]) == 0
    return model


@pytest.fixture
def files(tmp_path, tfidf_model) -> dict[str, Path]:
    """A labelled raw file, two predictions files with probs, a base model folder and an adapter folder."""
    raw = m3ed_file(tmp_path / "annotation_test.json", {"d1": GOOD})
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_predictions(first, [Prediction(i, "Happy", probs("Happy")) for i in IDS])
    write_predictions(second, [Prediction(i, "Sad", probs("Sad")) for i in IDS])
    base, adapter = tmp_path / "base", tmp_path / "runs" / "adapter"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    return {"raw": raw, "a": first, "b": second, "model": tfidf_model, "base": base, "adapter": adapter, "tmp": tmp_path}


def _in_folder(f, folder: str, name: str, source: Path) -> Path:
    """`source` copied to `<tmp>/<folder>/<name>`; returns the copy."""
    path = f["tmp"] / folder / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(source.read_bytes())
    return path


def _symlink(f, target: Path) -> Path:
    link = f["tmp"] / "link.json"
    link.symlink_to(target)
    return link


def _hard_link(f, target: Path) -> Path:
    link = f["tmp"] / "hard.jsonl"
    os.link(target, link)
    return link


# name: (builder of (argv, the output refused, the input it would replace), expected message)
OUTPUT_IS_INPUT = {
    "predict-out-is-input": (lambda f: (["predict", "--model", str(f["model"]), "--input", str(f["raw"])], f["raw"], f["raw"]), "is the input"),
    "predict-llamafactory-is-input": (lambda f: (["predict", "--model", str(f["model"]), "--input", str(f["raw"]),
                                                  "--out", str(f["tmp"] / "p.jsonl"), "--llamafactory", str(f["raw"])], f["raw"], f["raw"]), "is the input"),
    "combine-out-is-raw": (lambda f: (["combine", "--predictions", str(f["a"]), "--raw", str(f["raw"])], f["raw"], f["raw"]), "is the input"),
    "combine-out-is-predictions": (lambda f: (["combine", "--predictions", str(f["a"]), "--raw", str(f["raw"])], f["a"], f["a"]), "is the input"),
    "combine-out-links-to-raw": (lambda f: (["combine", "--predictions", str(f["a"]), "--raw", str(f["raw"])], _symlink(f, f["raw"]), f["raw"]), "is the input"),
    "ensemble-out-is-an-input": (lambda f: (["ensemble", "--predictions", str(f["a"]), str(f["b"])], f["b"], f["b"]), "is the input"),
    "ensemble-out-hard-links-an-input": (lambda f: (["ensemble", "--predictions", str(f["a"]), str(f["b"])], _hard_link(f, f["a"]), f["a"]), "is the input"),
    "calibrate-out-is-predictions": (lambda f: (["calibrate", "--predictions", str(f["a"]), "--validation", str(f["raw"])], f["a"], f["a"]), "is the input"),
    "select-out-is-validation": (lambda f: (["select", "--run", str(f["tmp"]), "--validation", str(f["raw"])], f["raw"], f["raw"]), "is the input"),
    "calibrate-out-is-a-model-file": (lambda f: (["calibrate", "--model", str(f["model"]), "--validation", str(f["raw"])],
                                                 f["model"] / "tfidf.json", f["model"] / "tfidf.json"), "is the input"),
    "select-out-is-an-adapter-file": (lambda f: (["select", "--run", str(f["adapter"]), "--validation", str(f["raw"])],
                                                 p := f["adapter"] / "adapter_config.json", p), "is the input"),
    "prepare-writes-over-its-input": (lambda f: (["prepare", "--test", str(p := _in_folder(f, "data", "data_test.json", f["raw"]))],
                                                 p.parent, p), "is the input"),
    "evaluate-metrics-is-predictions": (lambda f: (["evaluate", "--predictions", str(p := _in_folder(f, "rep", "metrics.json", f["a"])),
                                                    "--gold", str(f["raw"])], p.parent, p), "is the input"),
    "report-md-is-gold": (lambda f: (["report", "--predictions", str(f["a"]), "--gold", str(p := _in_folder(f, "rep", "report.md", f["raw"]))],
                                     p.parent, p), "is the input"),
    "merge-out-is-base": (lambda f: (["merge", "--base", str(f["base"]), "--adapter", str(f["adapter"])], f["base"], f["base"] / "config.json"),
                          "is or holds the input"),
    "merge-out-holds-adapter": (lambda f: (["merge", "--base", str(f["base"]), "--adapter", str(f["adapter"])], f["tmp"] / "runs",
                                           f["adapter"] / "adapter_config.json"), "is or holds the input"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_IS_INPUT))
def test_an_output_that_is_an_input_is_refused(case, files, capsys):
    build, message = OUTPUT_IS_INPUT[case]
    argv, out, protected = build(files)
    before = digest(protected)
    assert main(argv if "--out" in argv else [*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(out) in err and "Traceback" not in err, err
    assert digest(protected) == before
    assert not list(files["tmp"].rglob("*.erckit-tmp")) and not (files["tmp"] / "p.jsonl").exists()


def test_a_predict_out_that_is_a_fusion_members_file_is_refused(files, capsys):
    member = files["tmp"] / "second"
    shutil.copytree(files["model"], member)
    fusion = files["tmp"] / "fusion"
    assert main(["ensemble", "--models", str(files["model"]), str(member), "--weights", "1", "1", "--out", str(fusion)]) == 0
    capsys.readouterr()
    protected = member / "tfidf.json"
    before = digest(protected)
    assert main(["predict", "--model", str(fusion), "--input", str(files["raw"]), "--out", str(protected)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{protected}: is the input" in err, err
    assert digest(protected) == before


def test_two_outputs_on_one_new_path_are_refused(files, capsys):
    out = files["tmp"] / "new" / "p.jsonl"
    assert main(["predict", "--model", str(files["model"]), "--input", str(files["raw"]), "--out", str(out),
                 "--llamafactory", str(out.parent / "." / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is also --llamafactory" in err, err
    assert not out.parent.exists()


def test_an_llm_predict_whose_work_file_would_be_its_input_is_refused(files, capsys):
    out = files["tmp"] / "labels.json"
    partial = out.with_name(out.name + ".partial")  # where predict keeps the answers so far
    partial.write_bytes(files["raw"].read_bytes())  # no final newline: would be trimmed as a partial file
    before = digest(partial)
    assert main(["predict", "--model", str(files["base"]), "--input", str(partial), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{partial}: is the input {partial}" in err, err
    assert digest(partial) == before and not out.exists()


def test_a_train_out_whose_record_is_its_data_is_refused(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    data = out / "erckit_model.json"
    data.write_bytes((SAMPLE / "annotation_train.json").read_bytes())
    assert main(["train", "--config", "tfidf", f"out={out}", f"data.train={data}",
                 "data.validation=null"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert data.read_bytes() == (SAMPLE / "annotation_train.json").read_bytes()


def combine_args(files, out) -> list[str]:
    return ["combine", "--predictions", str(files["a"]), "--raw", str(files["raw"]), "--out", str(out)]


@pytest.mark.parametrize("dangling", [False, True], ids=["existing-target", "dangling-link"])
def test_a_symlinked_output_is_written_through(dangling, files):
    target = files["tmp"] / "elsewhere" / "labels.json"
    target.parent.mkdir()
    if not dangling:
        target.write_text("old", encoding="utf-8")
    link = files["tmp"] / "test_label.json"
    link.symlink_to(target)
    assert main(combine_args(files, link)) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    labelled = json.loads(target.read_text(encoding="utf-8"))
    assert labelled["Show"]["d1"]["Dialog"]["d1_1"]["EmoAnnotation"]["final_main_emo"] == "Happy"


def test_special_files_and_folders_are_refused_not_replaced(files, capsys):
    fifo = files["tmp"] / "pipe"
    os.mkfifo(fifo)
    assert main(combine_args(files, fifo)) == 2
    assert "not a regular file" in capsys.readouterr().err and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    folder = files["tmp"] / "a_folder"
    folder.mkdir()
    assert main(combine_args(files, folder)) == 2
    assert "is a folder" in capsys.readouterr().err and folder.is_dir()


@pytest.mark.parametrize("path", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", "/dev/null"])
def test_device_paths_are_refused(path):
    """/dev/stdout can link to a regular file (a shell redirect): a rename would replace it. Checked
    without writing, so a regression cannot replace the system's /dev/stdout."""
    from erckit.atomic import check_output
    from erckit.data import DataError

    with pytest.raises(DataError, match="device or process path"):
        check_output(path, [])


def test_a_replaced_file_keeps_its_mode_and_new_files_get_the_umask(files, tfidf_model):
    out = files["tmp"] / "test_label.json"
    out.write_text("old", encoding="utf-8")
    out.chmod(0o444)
    assert main(combine_args(files, out)) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o444 and "d1_1" in out.read_text(encoding="utf-8")
    umask = os.umask(0)
    os.umask(umask)
    for name in ("tfidf.safetensors", "tfidf.json", "erckit_model.json"):  # safetensors itself writes 0600
        assert stat.S_IMODE((tfidf_model / name).stat().st_mode) == 0o666 & ~umask, name


KILLED_WRITE = """
import os, signal, sys
from erckit.atomic import atomic_folder, atomic_path
context = (atomic_folder if sys.argv[2] == "folder" else atomic_path)(sys.argv[1])
tmp = context.__enter__()
target = tmp / "config.json" if sys.argv[2] == "folder" else tmp
target.write_bytes(b'{"half": ' * 100000)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_write(path: Path, kind: str) -> None:
    result = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path), kind], check=False)
    assert result.returncode == -signal.SIGKILL


def test_a_killed_write_leaves_the_old_file_and_the_next_run_removes_its_leftover(files):
    out = files["tmp"] / "test_label.json"
    out.write_text("old", encoding="utf-8")
    killed_write(out, "file")
    assert out.read_text(encoding="utf-8") == "old"
    assert len([p for p in files["tmp"].iterdir() if p.name.startswith(".test_label.json.")]) == 1  # the leftover
    assert main(combine_args(files, out)) == 0
    assert [p.name for p in files["tmp"].iterdir() if p.name.startswith(".")] == []


def test_a_killed_folder_write_leaves_no_folder(tmp_path):
    out = tmp_path / "merged"
    killed_write(out, "folder")
    assert not out.exists()  # a merge killed while saving leaves no half-written model folder
    from erckit.atomic import atomic_folder

    with atomic_folder(out) as folder:
        (folder / "config.json").write_text("{}", encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"] and (out / "config.json").is_file()


def test_a_report_is_written_whole_or_not_at_all(tmp_path, capsys, monkeypatch):
    gold = m3ed_file(tmp_path / "gold.json", {"d1": GOOD})
    first, second, report = tmp_path / "first.jsonl", tmp_path / "second.jsonl", tmp_path / "report"
    write_predictions(first, [Prediction(i, "Happy") for i in IDS])
    write_predictions(second, [Prediction(i, "Neutral") for i in IDS])
    (report).mkdir()
    (report / "notes.md").write_text("mine", encoding="utf-8")  # not a report file: left alone
    assert main(["evaluate", "--predictions", str(first), "--gold", str(gold), "--out", str(report)]) == 0
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    assert set(before) == {"metrics.json", "confusion.png", "notes.md"}

    def fail(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("erckit.metrics.plot_confusion", fail)
    capsys.readouterr()
    assert main(["evaluate", "--predictions", str(second), "--gold", str(gold), "--out", str(report)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{report}: cannot write: No space left on device" in err, err
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_report_into_the_current_folder_is_written(tmp_path, monkeypatch):
    """`--out .` (the folder one works in) for the commands that write several files at once."""
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "--train", str(SAMPLE / "annotation_train.json"), "--out", "."]) == 0
    assert (tmp_path / "data_train.json").is_file() and (tmp_path / "dataset_info.json").is_file()
    assert main(["train", "--config", "tfidf", "out=m", f"data.train={SAMPLE / 'annotation_train.json'}"]) == 0
    test = SAMPLE / "annotation_test.json"
    assert main(["predict", "--model", "m", "--input", str(test), "--out", "p.jsonl"]) == 0
    assert main(["evaluate", "--predictions", "p.jsonl", "--gold", str(test), "--out", "."]) == 0
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "confusion.png").is_file()


def test_predict_never_writes_over_a_file_in_a_model_folders_subfolders(tmp_path, capsys):
    model = tmp_path / "m"
    assert main(["train", "--config", "tfidf", f"out={model}", f"data.train={SAMPLE / 'annotation_train.json'}"]) == 0
    (model / "best").mkdir()
    kept = model / "best" / "adapter_config.json"
    kept.write_text("{}")
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--input", str(SAMPLE / "annotation_test.json"),
                 "--out", str(kept)]) == 2
    assert "is the input" in capsys.readouterr().err and kept.read_text() == "{}"


KILLED_SAFETENSORS = """
import os, signal, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import save_file
from erckit.atomic import write_safetensors

def killed_mid_save(tensors, path, metadata=None):  # as safetensors does: its own temporary file beside `path`
    (Path(path).parent / ".tmpAbC123").write_bytes(b"half a model" * 100000)
    os.kill(os.getpid(), signal.SIGKILL)

write_safetensors(killed_mid_save if sys.argv[2] == "kill" else save_file, {"w": np.ones(3, np.float32)}, sys.argv[1])
"""


def test_a_safetensors_write_killed_midway_leaves_nothing_the_next_write_keeps(tmp_path):
    """safetensors writes through its own temporary file beside the path it is given: a kill must not strand
    it (it is the model's size) next to the weights."""
    out = tmp_path / "model.safetensors"
    killed = subprocess.run([sys.executable, "-c", KILLED_SAFETENSORS, str(out), "kill"], check=False)
    assert killed.returncode == -signal.SIGKILL and not out.exists()
    assert subprocess.run([sys.executable, "-c", KILLED_SAFETENSORS, str(out), "save"], check=False).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
