"""A training run's out folder (erckit.runfolder): new, empty or an erckit run; one run at a time."""

import json
import subprocess
import sys
import time

import pytest

import erckit
from conftest import SAMPLE_DATA
from erckit.cli import main
from erckit.runfolder import LOCK_NAME

TRAIN = ["train", "--config", "tfidf", *SAMPLE_DATA, "data.validation=null"]
HOLD = "from filelock import FileLock; import os, sys, time; l = FileLock(sys.argv[1]); l.acquire(); " \
       "open(sys.argv[1], 'w').write(str(os.getpid())); print('held', flush=True); time.sleep(60)"


def foreign(out):
    out.mkdir()
    (out / "notes.txt").write_text("mine")


def a_file(out):
    out.write_text("mine")


def other_recipe(out):
    assert main([*TRAIN, f"out={out}", "tfidf.c=3"]) == 0


@pytest.fixture
def held(tmp_path):
    """A process holding the lock of tmp_path/run, as a running erckit train does."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    yield holder.pid
    holder.kill()
    holder.wait()


REFUSED = {  # out as it is -> the one line that refuses it
    "non-empty-foreign-folder": (foreign, "is a folder that is not an erckit run (no erckit_model.json; it holds notes.txt)"),
    "a-file": (a_file, "is not a folder"),
    "run-of-another-recipe": (other_recipe, "holds a run of another recipe (tfidf.c differs)"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_out_that_is_not_new_empty_or_this_run_is_refused(case, tmp_path, capsys):
    make, message = REFUSED[case]
    out = tmp_path / "run"
    make(out)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_text()
    capsys.readouterr()
    assert main([*TRAIN, f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(out) in err and message in err, err
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_text()) == before  # nothing written


def test_a_second_run_into_a_folder_being_written_is_refused(held, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err == f"erckit train: error: {out}: is being written by another erckit run (pid {held}); wait for it " \
                  "to finish or choose another out=\n"
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the other run's lock, nothing of this one


@pytest.mark.parametrize("case", ["new", "empty", "left-by-a-killed-run", "same-run", "same-run-saved-with-data.test"])
def test_a_new_empty_or_same_run_folder_is_used(case, tmp_path, capsys):
    out = tmp_path / "run"
    if case == "empty":
        out.mkdir()
    elif case == "left-by-a-killed-run":  # its lock file and a temporary file of a dead process
        out.mkdir()
        (out / LOCK_NAME).write_text("999999999\n")
        (out / ".erckit_model.json.999999999.erckit-tmp").write_text("")
    elif case.startswith("same-run"):
        assert main([*TRAIN, f"out={out}"]) == 0
    if case == "same-run-saved-with-data.test":  # as erckit saved it before data.test was refused
        info = json.loads((out / "erckit_model.json").read_text())
        info["config"]["data"]["test"] = "annotation_test.json"
        (out / "erckit_model.json").write_text(json.dumps(info))
        assert erckit.load(out).kind == "tfidf"
    capsys.readouterr()
    assert main([*TRAIN, f"out={out}"]) == 0
    said = capsys.readouterr().out
    assert ("reusing it" in said) == case.startswith("same-run")
    assert (out / "erckit_model.json").is_file() and not (out / LOCK_NAME).exists()


def test_a_refused_recipe_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "run"
    assert main([*TRAIN, f"out={out}", "data.train=null"]) == 2
    assert not out.exists()


def test_only_the_main_process_of_a_launch_takes_the_lock(held, tmp_path):
    """Ranks other than 0 never wait on (or fail for) the lock rank 0 holds; they only check the folder."""
    from erckit.runfolder import hold

    out = tmp_path / "run"
    started = time.monotonic()
    with hold(out, "erckit_model.json", main=False):
        pass
    assert time.monotonic() - started < 1


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(target)
    assert main([*TRAIN, f"out={out}"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "is not a regular file (a link?)" in error
    assert target.read_text() == "keep me" and not (out / "erckit_model.json").exists()
