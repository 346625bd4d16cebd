"""Progress bars of long work: on a terminal only, and only once the work takes a while."""

import io
import os
import subprocess
import sys

import erckit.progress
from conftest import SAMPLE, SAMPLE_DATA
from erckit.cli import main
from erckit.progress import DELAY, bar
from llm_tiny import save_tiny, tiny_model, tiny_tokenizer

TEST = SAMPLE / "annotation_test.json"


def test_a_bar_waits_for_slow_work_and_for_a_terminal(monkeypatch):
    assert bar(10, "x", show=False).disable
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a file, not a terminal (also under pytest -s)
    assert bar(10, "x").disable
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        shown = bar(10, "x")
        assert not shown.disable and shown.delay == DELAY > 0  # on a terminal, after DELAY seconds of work
        shown.close()
        assert bar(10, "x", show=False).disable  # not asked for: never
    os.close(primary)


def test_predict_combine_and_evaluate_write_nothing_on_a_piped_stderr(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(erckit.progress, "DELAY", 0.0)  # a bar would show at once: only the pipe keeps it away
    model, preds, out = tmp_path / "model", tmp_path / "p.jsonl", tmp_path / "labelled.json"
    assert main(["train", "--config", "tfidf", f"out={model}", *SAMPLE_DATA, "data.validation=null"]) == 0
    assert main(["predict", "--model", str(model), "--input", str(TEST), "--out", str(preds)]) == 0
    assert main(["combine", "--predictions", str(preds), "--raw", str(TEST), "--out", str(out)]) == 0
    assert main(["evaluate", "--predictions", str(preds), "--gold", str(out), "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err  # the tf-idf commands wrote no bar: only combine's note on the labelled sample
    assert err.startswith(f"note: {TEST} was labelled already: 96 of the 96 labels") and err.count("\n") == 1
    llm = save_tiny(tmp_path / "llm", tiny_model(tiny_tokenizer()), tiny_tokenizer())
    capsys.readouterr()  # transformers' bar of the test's own model save
    run = subprocess.run([sys.executable, "-m", "erckit", "predict", "--model", str(llm), "--input", str(TEST),
                          "--template", "plain", "--out", str(tmp_path / "llm.jsonl")],  # an LLM, as a user runs it
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stderr == "", run.stderr  # transformers' bar of loading weights too: none
