"""Whisper weights stored by CTranslate2, renamed and split into transformers' Whisper layout.

Imports transferkit.core and transferkit.backbones.ct2. CTranslate2 stores each self-attention's query, key and
value projections fused into one ``linear_0`` (rows q, k, v) and a cross-attention's key and value fused into
``linear_1``; transformers keeps them apart, and its key projections have no bias (CTranslate2's converter writes
zeros there; a key bias would add the same q·b to every score of a query, which the softmax cancels, so dropping
it changes nothing). The config (sizes, layers, heads) is read off the arrays themselves.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from transferkit.core.errors import BackboneLoadError

_LINEAR = {"weight": "weight", "bias": "bias"}
_NORM = {"gamma": "weight", "beta": "bias"}
_SCALARS = ("num_heads", "activation", "alibi", "alignment_heads", "alignment_layer", "pre_norm",
            "scale_embeddings", "start_from_zero_embedding")


class _Mapper:
    """Collects transformers-named arrays and remembers which CTranslate2 arrays it used."""

    def __init__(self, variables: dict[str, np.ndarray]):
        self.variables, self.used, self.out = variables, set(), {}

    def get(self, name: str) -> np.ndarray:
        if name not in self.variables:
            raise BackboneLoadError(f"The CTranslate2 Whisper file has no variable '{name}'; it is not a Whisper "
                                    f"model in CTranslate2's WhisperSpec layout.")
        self.used.add(name)
        return self.variables[name]

    def copy(self, src: str, dst: str, parts: dict[str, str]) -> None:
        for s, d in parts.items():
            self.out[f"{dst}.{d}"] = self.get(f"{src}/{s}")

    def split(self, src: str, dsts: list[str]) -> None:
        """A fused linear: rows split evenly among ``dsts`` (a key projection loses its bias)."""
        weight, bias = self.get(f"{src}/weight"), self.get(f"{src}/bias")
        for w, b, dst in zip(np.split(weight, len(dsts)), np.split(bias, len(dsts)), dsts):
            self.out[f"{dst}.weight"] = w
            if not dst.endswith("k_proj"):
                self.out[f"{dst}.bias"] = b

    def layer(self, src: str, dst: str, cross: bool) -> None:
        attn, norm = f"{dst}.self_attn", f"{dst}.self_attn_layer_norm"
        self.split(f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"])
        self.copy(f"{src}/self_attention/linear_1", f"{attn}.out_proj", _LINEAR)
        self.copy(f"{src}/self_attention/layer_norm", norm, _NORM)
        if cross:
            cross_attn = f"{dst}.encoder_attn"
            self.copy(f"{src}/attention/linear_0", f"{cross_attn}.q_proj", _LINEAR)
            self.split(f"{src}/attention/linear_1", [f"{cross_attn}.k_proj", f"{cross_attn}.v_proj"])
            self.copy(f"{src}/attention/linear_2", f"{cross_attn}.out_proj", _LINEAR)
            self.copy(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", _NORM)
        self.copy(f"{src}/ffn/linear_0", f"{dst}.fc1", _LINEAR)
        self.copy(f"{src}/ffn/linear_1", f"{dst}.fc2", _LINEAR)
        self.copy(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", _NORM)

    def check_all_used(self, prefix: str) -> None:
        unused = sorted(n for n in self.variables if n.startswith(prefix) and n not in self.used
                        and n.rpartition("/")[2] not in _SCALARS)
        if unused:
            raise BackboneLoadError(f"The CTranslate2 Whisper file holds arrays transferkit does not map: {unused[:5]}.")


def _count_layers(variables: dict[str, np.ndarray], side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    if n == 0:
        raise BackboneLoadError(f"The CTranslate2 file has no {side} layers: it is not a Whisper model.")
    return n


def encoder_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers ``WhisperEncoder`` state dict (names without a prefix) from a CTranslate2 WhisperSpec's arrays.
    Every ``encoder/`` array is used (BackboneLoadError otherwise)."""
    m = _Mapper(variables)
    for conv in ("conv1", "conv2"):
        m.copy(f"encoder/{conv}", conv, _LINEAR)
    m.out["embed_positions.weight"] = m.get("encoder/position_encodings/encodings")
    for i in range(_count_layers(variables, "encoder")):
        m.layer(f"encoder/layer_{i}", f"layers.{i}", cross=False)
    m.copy("encoder/layer_norm", "layer_norm", _NORM)
    m.check_all_used("encoder/")
    return m.out


def decoder_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers ``WhisperDecoder`` state dict (names without a prefix); every ``decoder/`` array is used."""
    m = _Mapper(variables)
    m.out["embed_tokens.weight"] = m.get("decoder/embeddings/weight")
    m.out["embed_positions.weight"] = m.get("decoder/position_encodings/encodings")
    m.get("decoder/projection/weight")  # an alias of the embeddings: transformers ties proj_out to them
    for i in range(_count_layers(variables, "decoder")):
        m.layer(f"decoder/layer_{i}", f"layers.{i}", cross=True)
    m.copy("decoder/layer_norm", "layer_norm", _NORM)
    m.check_all_used("decoder/")
    return m.out


def whisper_config_kwargs(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """``transformers.WhisperConfig`` arguments that match the arrays' shapes (encoder and decoder)."""
    m = _Mapper(variables)  # a missing array is a BackboneLoadError naming it
    conv1 = m.get("encoder/conv1/weight")
    kwargs: dict[str, Any] = {
        "num_mel_bins": int(conv1.shape[1]),
        "d_model": int(conv1.shape[0]),
        "encoder_layers": _count_layers(variables, "encoder"),
        "encoder_attention_heads": int(m.get("encoder/num_heads")),
        "encoder_ffn_dim": int(m.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "max_source_positions": int(m.get("encoder/position_encodings/encodings").shape[0]),
    }
    if "decoder/embeddings/weight" in variables:
        kwargs.update({
            "vocab_size": int(m.get("decoder/embeddings/weight").shape[0]),
            "decoder_layers": _count_layers(variables, "decoder"),
            "decoder_attention_heads": int(m.get("decoder/num_heads")),
            "decoder_ffn_dim": int(m.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
            "max_target_positions": int(m.get("decoder/position_encodings/encodings").shape[0]),
        })
    return kwargs
