"""A sentence-transformers BERT exported to ONNX, read back into transformers' ``BertModel`` names and config.

Imports transferkit.core only (onnx is imported inside the functions). torch.onnx.export keeps the named
parameters (embeddings, biases, LayerNorms) as initialisers under their module path
(``model.0.auto_model.<BertModel name>``), but a Linear's weight becomes an anonymous initialiser
(``onnx::MatMul_470``) fed to a ``MatMul``, stored transposed ([in, out]). Which Linear it was is in the name of the
MatMul node (``/model/model.0/auto_model/encoder/layer.0/attention/self/query/MatMul``): each such node maps its
weight, transposed back to torch's [out, in], explicitly; every initialiser must be used and every ``BertModel``
parameter found (BackboneLoadError otherwise). The number of attention heads is not a parameter: it is read off
the attention's score scaling, a constant ``sqrt(head_dim)`` divisor.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.core.errors import BackboneLoadError

# the Linear layers of one BertLayer, by the path torch.onnx gives their MatMul node
_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
            "intermediate.dense", "output.dense")
_MATMUL = re.compile(r"/(?P<prefix>(?:[\w.]+/)*?auto_model)/encoder/layer\.(?P<i>\d+)/(?P<path>[\w./]+)/MatMul$")


def read_onnx_bert(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``BertModel`` state dict (float32 numpy, without a pooler) and ``BertConfig`` keyword arguments from an
    ONNX export of a sentence-transformers BERT (``model.0.auto_model.*`` initialisers)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state, used = {}, set()
    prefix = _auto_model_prefix(arrays)
    for name, array in arrays.items():
        if name.startswith(prefix):
            state[name.removeprefix(prefix)] = array
            used.add(name)
    for node in graph.node:
        match = _MATMUL.search(node.name) if node.op_type == "MatMul" else None
        if match is None or node.input[1] not in arrays:
            continue  # attention's own products (scores, context) multiply activations, not weights
        linear = match["path"].replace("/", ".")
        if linear not in _LINEARS:
            raise BackboneLoadError(f"{path}: MatMul '{node.name}' multiplies by a weight of no BertLayer Linear.")
        state[f"encoder.layer.{match['i']}.{linear}.weight"] = arrays[node.input[1]].T.copy()
        used.add(node.input[1])
    unused = sorted(set(arrays) - used)
    if unused:
        raise BackboneLoadError(f"{path} holds initialisers transferkit does not map onto BertModel: {unused[:5]}.")
    return {k: v.astype(np.float32) for k, v in state.items()}, _config_kwargs(state, graph, arrays)


def _auto_model_prefix(arrays: dict[str, np.ndarray]) -> str:
    for name in arrays:
        if name.endswith("embeddings.word_embeddings.weight"):
            return name.removesuffix("embeddings.word_embeddings.weight")
    raise BackboneLoadError("The ONNX file has no 'embeddings.word_embeddings.weight': it is not a BERT export.")


def _config_kwargs(state: dict[str, np.ndarray], graph: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Sizes from the arrays' shapes; heads from the first layer's score divisor (sqrt of the head size)."""
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    hidden = int(state["embeddings.word_embeddings.weight"].shape[1])
    head_dim = _score_divisor(graph, arrays) ** 2
    if abs(head_dim - round(head_dim)) > 1e-3 or hidden % round(head_dim):
        raise BackboneLoadError(f"The attention scaling implies a head size of {head_dim:.3f}, which does not "
                                f"divide the hidden size {hidden}.")
    return {
        "vocab_size": int(state["embeddings.word_embeddings.weight"].shape[0]),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // round(head_dim),
        "intermediate_size": int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "max_position_embeddings": int(state["embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        "layer_norm_eps": _layer_norm_eps(graph),
        "hidden_act": "gelu",  # the export computes GELU with Erf (exact), as BERT's "gelu" does
    }


def _layer_norm_eps(graph: Any) -> float:
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            return next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)  # 1e-5: the ONNX default
    raise BackboneLoadError("The ONNX graph has no LayerNormalization node: it is not a BERT export.")


def _score_divisor(graph: Any, arrays: dict[str, np.ndarray]) -> float:
    from onnx import numpy_helper

    constants = {out: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value" for out in n.output}
    constants.update(arrays)
    for node in graph.node:
        if node.op_type == "Div" and "/layer.0/attention/self/" in node.name and node.input[1] in constants:
            return float(np.asarray(constants[node.input[1]]).reshape(-1)[0])
    raise BackboneLoadError("Cannot find the attention score scaling of layer 0 in the ONNX graph.")
