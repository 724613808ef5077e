"""The backbone contract, checked for every registered backbone with its real pretrained weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tone
from transferkit.backbones import BACKBONES, OPTIONAL_BACKBONES, backbone_from_architecture, build_backbone
from transferkit.backbones.base import Backbone, state_dict_sha256
from transferkit.core.errors import BackboneLoadError
from transferkit.data.examples import Examples
from transferkit.data.loaders import make_loader

BATCH = 3


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def backbone(request) -> Backbone:
    try:
        return build_backbone(request.param).eval()
    except BackboneLoadError as error:
        if request.param in OPTIONAL_BACKBONES:  # an optional download that is not installed here
            pytest.skip(str(error))
        raise


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Real speech (tests/fixtures/hello-world.wav, 8 kHz) and two tones of other lengths and rates."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("contract-clips")
    paths = [str(Path(__file__).parent.parent / "fixtures" / "hello-world.wav")]
    for i, (freq, seconds, rate) in enumerate(((220.0, 2.5, 16000), (660.0, 0.6, 22050))):
        sf.write(folder / f"{i}.wav", tone(freq, seconds, rate, seed=i), rate)
        paths.append(str(folder / f"{i}.wav"))
    return paths


def _tiny_batch(backbone: Backbone, clips: list[str]) -> dict:
    """A real batch from the real loader and the backbone's own preprocessing (images shrunk to 64 px)."""
    if backbone.preprocessing.modality == "audio":
        spec, examples = backbone.preprocessing, Examples("audio", clips, None, "mem")
    elif backbone.preprocessing.modality == "image":
        rng = np.random.default_rng(0)
        inputs = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(BATCH)]
        spec = backbone.preprocessing.with_image_size(64)
        examples = Examples("image", inputs, None, "mem")
    else:
        inputs = ["A short sentence.", "Another, slightly longer sentence about transfer learning.", "Hi"]
        spec = backbone.preprocessing
        examples = Examples("text", inputs, None, "mem")
    return next(iter(make_loader(examples, spec, None, BATCH)))


def test_declares_its_attributes(backbone: Backbone):
    assert isinstance(backbone.feature_dim, int) and backbone.feature_dim > 0
    assert backbone.preprocessing.modality in ("image", "text", "audio")
    assert backbone.modality == backbone.preprocessing.modality
    assert isinstance(backbone.name, str) and backbone.name
    if backbone.modality == "text":
        assert backbone.preprocessing.tokenizer is not None
        assert backbone.preprocessing.max_length > 0


def test_pretrained_hash_matches_the_weights(backbone: Backbone):
    assert backbone.weights_sha256 is not None
    assert len(backbone.weights_sha256) == 64
    inner = next(backbone.children())
    assert state_dict_sha256(inner) == backbone.weights_sha256


def test_blocks_cover_every_parameter_exactly_once(backbone: Backbone):
    blocks = backbone.blocks()
    assert len(blocks) >= 2, "strategies need at least an input side and an output side"
    seen: dict[int, int] = {}
    for block in blocks:
        for p in block.parameters():
            seen[id(p)] = seen.get(id(p), 0) + 1
    every = {id(p): name for name, p in backbone.named_parameters()}
    missing = [every[i] for i in every if i not in seen]
    twice = [every.get(i, "?") for i, n in seen.items() if n > 1]
    foreign = [i for i in seen if i not in every]
    assert not missing, f"parameters in no block: {missing[:10]}"
    assert not twice, f"parameters in several blocks: {twice[:10]}"
    assert not foreign


def test_embed_shape_and_values(backbone: Backbone, clips: list[str]):
    batch = _tiny_batch(backbone, clips)
    with torch.inference_mode():
        features = backbone.embed(batch)
    assert features.shape == (BATCH, backbone.feature_dim)
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert features.abs().sum() > 0
    assert not torch.allclose(features[0], features[1]), "different inputs should give different features"
    with torch.inference_mode():
        torch.testing.assert_close(backbone(batch), features)  # forward == embed


def test_architecture_round_trip(backbone: Backbone, tmp_path: Path, clips: list[str]):
    arch = backbone.architecture()
    assert isinstance(arch, dict) and "type" in arch
    backbone.save_assets(tmp_path)
    rebuilt = backbone_from_architecture(arch, tmp_path)
    assert type(rebuilt) is type(backbone)
    assert rebuilt.feature_dim == backbone.feature_dim
    assert rebuilt.modality == backbone.modality
    assert rebuilt.weights_sha256 is None  # an architecture alone carries no pretrained weights
    n_params = sum(p.numel() for p in backbone.parameters())
    assert sum(p.numel() for p in rebuilt.parameters()) == n_params
    own, other = backbone.state_dict(), rebuilt.state_dict()
    assert list(own) == list(other)
    assert all(own[k].shape == other[k].shape for k in own)
    rebuilt.load_state_dict(own)  # the bundle's weights fit the rebuilt architecture
    rebuilt.eval()
    own_spec, other_spec = backbone.preprocessing.to_dict(), rebuilt.preprocessing.to_dict()
    for path_field in ("tokenizer", "feature_extractor"):  # asset folders: the package's vs the bundle's copy
        own_spec.pop(path_field, None), other_spec.pop(path_field, None)
    assert own_spec == other_spec
    batch = _tiny_batch(backbone, clips)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt.embed(batch), backbone.embed(batch), atol=1e-5, rtol=1e-5)


def test_random_init_has_no_hash_and_different_weights():
    name = sorted(set(BACKBONES) - set(OPTIONAL_BACKBONES))[0]  # an optional download may be absent here
    pretrained, random = build_backbone(name), build_backbone(name, pretrained=False)
    assert random.weights_sha256 is None
    assert sum(p.numel() for p in random.parameters()) == sum(p.numel() for p in pretrained.parameters())
    assert state_dict_sha256(next(random.children())) != pretrained.weights_sha256
