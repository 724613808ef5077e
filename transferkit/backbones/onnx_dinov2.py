"""A DINOv2-architecture ViT exported to ONNX (transformers' ``Dinov2Model`` under ``backbone.*``), read back into
timm's ``vit_small_patch14_dinov2`` state dict by an explicit name mapping.

Imports transferkit.core only (onnx and torch are imported inside the functions). torch.onnx.export keeps the
named parameters (cls token, patch embedding, LayerNorms, biases, layer scales) as initialisers under their module
path, but a Linear's weight becomes an anonymous initialiser (``onnx::MatMul_1966``) fed to a ``MatMul`` and stored
transposed ([in, out]); which Linear it was is in the MatMul node's name
(``/backbone/encoder/layer.0/attention/attention/query/MatMul``). The position table was constant-folded into two
anonymous initialisers: the class token's position (``/backbone/embeddings/Concat_6``'s first input) and the patch
grid (``/backbone/embeddings/Reshape_1``'s, 37 x 37 = 518 px / 14). Mapping (transformers -> timm, per layer i):

    embeddings.cls_token, patch_embeddings.projection   -> cls_token, patch_embed.proj
    positions: class + patch grid, resized to the grid  -> pos_embed [1, 1 + g*g, 384]
    encoder.layer.i.norm1 / norm2                        -> blocks.i.norm1 / norm2
    attention.attention.{query,key,value} (separate)     -> blocks.i.attn.qkv (fused: rows q, then k, then v)
    attention.output.dense                               -> blocks.i.attn.proj
    layer_scale1.lambda1 / layer_scale2.lambda1          -> blocks.i.ls1.gamma / ls2.gamma
    mlp.fc1 / mlp.fc2                                    -> blocks.i.mlp.fc1 / fc2
    layernorm                                            -> norm

Everything under ``decoder.*`` (the saliency head) is left out on purpose; any other initialiser is an error, and
the caller loads the result with ``strict=True`` (no missing or unexpected key). The patch grid is resized as
transformers' ``Dinov2Embeddings.interpolate_pos_encoding`` (and the graph's Resize node: cubic, a = -0.75,
half-pixel, no antialiasing) does at run time, so at that image size the positions are exactly the model's.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.core.errors import BackboneLoadError

_MATMUL = re.compile(r"^/backbone/encoder/layer\.(?P<i>\d+)/(?P<path>attention/attention/(?:query|key|value)|"
                     r"attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$")
_POSITIONS = {"/backbone/embeddings/Concat_6": "positions.class", "/backbone/embeddings/Reshape_1": "positions.patches"}
_TOP = {"embeddings.cls_token": "cls_token", "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias", "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias"}
_LAYER = {"norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias", "norm2.weight": "norm2.weight",
          "norm2.bias": "norm2.bias", "attention.output.dense.weight": "attn.proj.weight",
          "attention.output.dense.bias": "attn.proj.bias", "layer_scale1.lambda1": "ls1.gamma",
          "layer_scale2.lambda1": "ls2.gamma", "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
          "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias"}
_QKV = ("query", "key", "value")
SKIPPED_PREFIX = "decoder."  # the saliency decoder: not part of the encoder


def read_onnx_dinov2(path: Path) -> dict[str, np.ndarray]:
    """The encoder's tensors under transformers' ``Dinov2Model`` names (float32, Linear weights as [out, in]),
    plus ``positions.class`` [1, 1, D] and ``positions.patches`` [1, g*g, D]. Raises BackboneLoadError when an
    initialiser is neither the encoder's nor the decoder's, or the graph is not such an export."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state: dict[str, np.ndarray] = {}
    used = {name for name in arrays if name.startswith(SKIPPED_PREFIX)}
    for name, array in arrays.items():
        if name.startswith("backbone."):
            state[name.removeprefix("backbone.")] = array
            used.add(name)
    for node in graph.node:
        weight = node.input[1] if len(node.input) > 1 else None
        match = _MATMUL.match(node.name) if node.op_type == "MatMul" else None
        if match is not None and weight in arrays:
            state[f"encoder.layer.{match['i']}.{match['path'].replace('/', '.')}.weight"] = arrays[weight].T.copy()
            used.add(weight)
        elif node.name in _POSITIONS and node.input[0] in arrays:
            state[_POSITIONS[node.name]] = arrays[node.input[0]]
            used.add(node.input[0])
    unused = sorted(set(arrays) - used)
    if unused:
        raise BackboneLoadError(f"{path} holds initialisers transferkit does not map onto the ViT: {unused[:5]}.")
    missing = [k for k in ("positions.class", "positions.patches", *_TOP) if k not in state]
    if missing:
        raise BackboneLoadError(f"{path}: no {missing[0]} found; it is not an ONNX export of a Dinov2Model.")
    return {k: np.array(v, dtype=np.float32) for k, v in state.items()}  # copies: torch wants writable arrays


def resize_positions(patches: Any, grid: int) -> Any:
    """[1, n*n, D] patch positions -> [1, grid*grid, D], bicubic (a = -0.75, half-pixel, no antialias) as
    transformers' Dinov2 interpolates them; float32 torch tensors."""
    import torch.nn.functional as F

    n = round(patches.shape[1] ** 0.5)
    if n * n != patches.shape[1]:
        raise BackboneLoadError(f"The patch position table has {patches.shape[1]} rows, not a square grid.")
    if n == grid:
        return patches
    table = patches.reshape(1, n, n, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table, size=(grid, grid), mode="bicubic", align_corners=False, antialias=False)
    return table.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)


def dinov2_to_timm(state: dict[str, np.ndarray], grid: int) -> dict[str, Any]:
    """timm ``vit_small_patch14_dinov2`` (any depth/width) state dict from ``read_onnx_dinov2``'s tensors, with
    the patch positions resized to a ``grid`` x ``grid`` patch grid. Raises BackboneLoadError on a tensor left over."""
    import torch

    left = {k: torch.from_numpy(v) for k, v in state.items()}

    def take(key: str) -> Any:
        if key not in left:
            raise BackboneLoadError(f"The ONNX encoder has no tensor for transformers' '{key}'.")
        return left.pop(key)

    out = {timm: take(hf) for hf, timm in _TOP.items()}
    out["pos_embed"] = torch.cat([take("positions.class"), resize_positions(take("positions.patches"), grid)], 1)
    layers = sorted({int(k.split(".")[2]) for k in left if k.startswith("encoder.layer.")})
    if layers != list(range(len(layers))):
        raise BackboneLoadError(f"The encoder's layers are not numbered 0..n-1: {layers}.")
    for i in layers:
        prefix = f"encoder.layer.{i}."
        for hf, timm in _LAYER.items():
            out[f"blocks.{i}.{timm}"] = take(prefix + hf)
        for part in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{part}"] = torch.cat(
                [take(f"{prefix}attention.attention.{q}.{part}") for q in _QKV], 0)
    if left:
        raise BackboneLoadError(f"Tensors of the ONNX encoder with no place in timm's ViT: {sorted(left)[:5]}.")
    return {k: v.contiguous() for k, v in out.items()}
