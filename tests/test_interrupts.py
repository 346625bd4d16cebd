"""Ctrl-C ends every command with exit code 130 and one line saying what was kept and how to go on; a full
disk while saving ends with one line naming the file (exit code 2), never a traceback."""

import errno

import pytest
from safetensors import SafetensorError

from conftest import SAMPLE, SAMPLE_DATA
from erckit.cli import main

TRAIN = ["train", "--config", "tfidf", *SAMPLE_DATA, "data.validation=null"]
TEST = SAMPLE / "annotation_test.json"


def one_line(capsys, line: str) -> None:
    """stderr ends with `line` (progress bars may come before it), no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and [l for l in err.splitlines() if l.startswith("erckit ")] == [line], err


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.fixture
def tfidf_model(tmp_path):
    model = tmp_path / "model"
    assert main([*TRAIN, f"out={model}"]) == 0
    return model


def test_ctrl_c_in_train_before_a_checkpoint(tmp_path, monkeypatch, capsys):
    from erckit.tfidf import TfidfClassifier

    monkeypatch.setattr(TfidfClassifier, "save", interrupt)
    out = tmp_path / "run"
    assert main([*TRAIN, f"out={out}"]) == 130
    one_line(capsys, f"erckit train: interrupted: {out}: no checkpoint was saved yet; run the same command again to resume")
    monkeypatch.undo()
    assert main([*TRAIN, f"out={out}"]) == 0  # the same command starts it over


def test_ctrl_c_in_train_after_a_checkpoint(tmp_path, monkeypatch, capsys):
    from erckit.kinds import tfidf as kind
    from erckit.tfidf import TfidfClassifier

    def checkpoint_then_interrupt(self, folder):
        (folder / "checkpoint").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(TfidfClassifier, "save", checkpoint_then_interrupt)
    monkeypatch.setattr(kind, "resumable", lambda folder: (folder / "checkpoint").is_dir())  # as a kind that resumes
    out = tmp_path / "run"
    assert main([*TRAIN, f"out={out}"]) == 130
    one_line(capsys, f"erckit train: interrupted: {out}: its last checkpoint is kept; run the same command again to resume")


def test_ctrl_c_in_predict_and_evaluate_keeps_nothing_half_written(tfidf_model, tmp_path, monkeypatch, capsys):
    from erckit import metrics
    from erckit.predictor import Predictor

    out = tmp_path / "p.jsonl"
    monkeypatch.setattr(Predictor, "predict", interrupt)
    assert main(["predict", "--model", str(tfidf_model), "--input", str(TEST), "--out", str(out)]) == 130
    one_line(capsys, "erckit predict: interrupted: nothing was kept half-written; run the same command again")
    assert not out.exists()
    monkeypatch.setattr(metrics, "evaluate_files", interrupt)
    assert main(["evaluate", "--predictions", str(out), "--gold", str(TEST)]) == 130
    one_line(capsys, "erckit evaluate: interrupted: nothing was kept half-written; run the same command again")


def test_ctrl_c_in_llm_predict_keeps_the_partial_file(tmp_path, monkeypatch, capsys, reference_file):
    from erckit.llm.backends import Backend
    from llm_tiny import save_tiny, tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = save_tiny(tmp_path / "llm", tiny_model(tokenizer), tokenizer)
    real_run, calls = Backend.run, []

    def dies_after_one_batch(self, batch):
        calls.append(len(batch))
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_run(self, batch)

    monkeypatch.setattr(Backend, "run", dies_after_one_batch)
    out = tmp_path / "p.jsonl"
    command = ["predict", "--model", str(model), "--input", str(reference_file), "--out", str(out), "--template", "plain",
               "--batch-size", "4", "--device", "cpu"]
    assert main(command) == 130
    one_line(capsys, f"erckit predict: interrupted: the predictions so far are kept in {out}.partial; "
                     "run the same command again to resume")
    assert len(out.with_name("p.jsonl.partial").read_text().splitlines()) == 1 + 4
    monkeypatch.undo()
    assert main(command) == 0
    assert "4 resumed" in capsys.readouterr().out


DISK_FULL = {  # what the save function raises
    "oserror": OSError(errno.ENOSPC, "No space left on device"),
    "safetensors": SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
}


@pytest.mark.parametrize("case", sorted(DISK_FULL))
def test_a_full_disk_while_saving_weights_names_the_file(case, tmp_path, monkeypatch, capsys):
    from erckit import tfidf

    def full(*args, **kwargs):
        raise DISK_FULL[case]

    monkeypatch.setattr(tfidf, "save_file", full)
    out = tmp_path / "run"
    assert main([*TRAIN, f"out={out}"]) == 2
    one_line(capsys, f"erckit train: error: {out / 'tfidf.safetensors'}: cannot write: "
                     + str(DISK_FULL[case]).removeprefix("[Errno 28] "))
    assert not list(out.glob("*.erckit-tmp")) and not (out / "tfidf.safetensors").exists()


def test_a_full_disk_where_the_saver_names_no_file_names_the_output(tmp_path, monkeypatch, capsys):
    """save_pretrained, torch.save: an OSError without a file name is told with the command's output."""
    from erckit.tfidf import TfidfClassifier

    def full(self, folder):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TfidfClassifier, "save", full)
    out = tmp_path / "run"
    assert main([*TRAIN, f"out={out}"]) == 2
    one_line(capsys, f"erckit train: error: {out}: cannot write: [Errno 28] No space left on device")


def test_a_full_disk_while_writing_predictions_names_the_file(tfidf_model, tmp_path, monkeypatch, capsys):
    import os

    out = tmp_path / "p.jsonl"
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    assert main(["predict", "--model", str(tfidf_model), "--input", str(TEST), "--out", str(out)]) == 2
    monkeypatch.setattr(os, "replace", real_replace)
    one_line(capsys, f"erckit predict: error: {out}: cannot write: No space left on device")
    assert not out.exists() and not list(tmp_path.glob("*.erckit-tmp"))


def test_sigterm_ends_a_command_as_ctrl_c_does_with_exit_143(tmp_path, monkeypatch, capsys):
    """`kill`, a job scheduler or a launcher stopping its workers: the same one line and clean-up as Ctrl-C (the
    run's lock removed), exit code 143; the earlier SIGTERM handler is back afterwards."""
    import os
    import signal

    from erckit.tfidf import TfidfClassifier

    def terminated_while_saving(self, folder):
        os.kill(os.getpid(), signal.SIGTERM)

    earlier = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(TfidfClassifier, "save", terminated_while_saving)
    out = tmp_path / "run"
    assert main([*TRAIN, f"out={out}"]) == 143
    one_line(capsys, f"erckit train: terminated: {out}: no checkpoint was saved yet; run the same command again to "
                     "resume")
    assert not (out / ".erckit-train.lock").exists() and signal.getsignal(signal.SIGTERM) == earlier
