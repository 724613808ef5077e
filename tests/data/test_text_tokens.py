"""transferkit.data.text_tokens: texts tokenised once per loader, padded exactly as the tokenizer pads, and
inference batches sorted by length whose predictions come back in input order with the unsorted values."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit
from tests.conftest import bbc_texts, write_text_csv
from transferkit.backbones.text import minilm
from transferkit.data import text_tokens
from transferkit.data.examples import Examples
from transferkit.data.labels import LabelMap
from transferkit.data.loaders import make_loader
from transferkit.data.preprocess import PreprocessSpec, load_tokenizer
from transferkit.data.stream import inference_batches
from transferkit.serve.predictor import Predictor

TEXTS = ["A short one.", "", "Transferkit tags unbelievably long sentences about Zürich and Kyiv " * 3,
         "Two words", "Ünïcödé ✓ and emoji 🙂 in a text"]


@pytest.fixture(scope="module")
def spec() -> PreprocessSpec:
    return PreprocessSpec(modality="text", tokenizer=minilm(pretrained=False).preprocessing.tokenizer, max_length=16)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_tokenised_rows_equals_the_tokenizers_own_padding(spec: PreprocessSpec, side: str):
    tokenizer = copy.deepcopy(load_tokenizer(spec))
    tokenizer.padding_side = side
    expected = tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    got = text_tokens.pad(text_tokens.tokenize(TEXTS, spec), tokenizer)
    assert got.keys() == {"input_ids", "token_type_ids", "attention_mask"} == set(expected.keys())
    for key in got:
        assert torch.equal(got[key], expected[key]), key


def test_a_loader_tokenises_once_and_gives_the_same_batches(spec: PreprocessSpec, monkeypatch):
    examples = Examples("text", TEXTS * 3, ["a", "b", "a", "b", "a"] * 3, "texts")
    labels = LabelMap(["a", "b"])
    calls = []
    real = text_tokens.tokenize
    monkeypatch.setattr("transferkit.data.loaders.tokenize", lambda texts, s: calls.append(len(texts)) or real(texts, s))
    loader = make_loader(examples, spec, labels, 4, shuffle_seed=0)
    tokenizer = load_tokenizer(spec)
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            texts = [examples.inputs[i] for i in batch["index"]]
            expected = tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
            assert all(torch.equal(batch[k], expected[k]) for k in expected)
    assert calls == [15]  # one tokenisation of the split, for both epochs


def test_length_order_is_stable_and_shortest_first():
    rows = [{"input_ids": np.zeros(n, np.int32)} for n in (5, 2, 5, 1, 2)]
    assert text_tokens.length_order(rows) == [3, 1, 4, 0, 2]


def test_predictions_by_length_come_back_in_input_order_with_unsorted_values(tmp_path: Path):
    texts, labels = bbc_texts(per_class=4)
    bundle = transferkit.fit(str(write_text_csv(tmp_path / "train.csv", texts, labels)), model="minilm",
                             strategy="linear-probe", out=str(tmp_path / "run"), progress=False).bundle_dir
    predictor = Predictor.from_bundle(bundle, batch_size=4)
    more, _ = bbc_texts(per_class=3, offset=4, chars=600)
    varied = [t[: 40 + 97 * k % 560] for k, t in enumerate(more)]  # lengths out of order
    examples = Examples("text", varied, None, "texts")
    sorted_positions = [p for b in inference_batches(examples, predictor.preprocessing, 4, by_length=True)
                        for p in b.positions]
    assert sorted(sorted_positions) == list(range(len(varied))) and sorted_positions != list(range(len(varied)))
    unsorted = np.concatenate([predictor.probabilities(b.inputs)
                               for b in inference_batches(examples, predictor.preprocessing, 4)])
    got = predictor.predict(examples)
    assert got.ids == examples.ids
    np.testing.assert_allclose(got.probabilities, unsorted, rtol=0, atol=1e-5)
    assert (got.probabilities.argmax(1) == unsorted.argmax(1)).all()


class _TokenCount(torch.nn.Module):
    """Logits = (token count, first id) per text: order-revealing, no weights to load."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([batch["attention_mask"].sum(1), batch["input_ids"][:, 1]], 1).float()


def test_evaluation_loader_by_length_gives_logits_and_labels_in_input_order(spec: PreprocessSpec):
    from transferkit.train.inference import predict_logits

    examples = Examples("text", TEXTS * 2, ["a", "b", "b", "a", "a"] * 2, "texts")
    labels = LabelMap(["a", "b"])
    by_length = make_loader(examples, spec, labels, 3, by_length=True)
    assert [int(i) for b in by_length for i in b["index"]] != list(range(10))  # batches really sorted
    got, got_labels = predict_logits(_TokenCount(), by_length, "fp32")
    expected, expected_labels = predict_logits(_TokenCount(), make_loader(examples, spec, labels, 3), "fp32")
    counts = [len(r["input_ids"]) for r in text_tokens.tokenize(examples.inputs, spec)]
    assert got[:, 0].tolist() == counts and np.array_equal(got, expected)
    assert got_labels.tolist() == expected_labels.tolist() == [0, 1, 1, 0, 0] * 2
