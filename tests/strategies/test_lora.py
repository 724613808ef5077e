"""LoRA and IA3 through peft on the real MiniLM and Lite0: few trainable parameters, merged = unmerged, plain bundles,
and adapter files that rebuild the bundle (batch-norm statistics included)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from transferkit import api
from transferkit.backbones import build_backbone
from transferkit.core.errors import BundleError, ConfigError
from transferkit.data.examples import Examples
from transferkit.data.loaders import make_loader
from transferkit.data.sources import load_source
from transferkit.export.adapters import model_from_adapter
from transferkit.export.bundle import load_bundle
from transferkit.strategies import StrategyContext, build_strategy
from transferkit.tasks import ClassificationHead
from transferkit.tasks.model import TransferModel
from transferkit.train.inference import predict_logits

TEXTS = ["stocks fell as the bank raised rates", "the striker scored twice in the final",
         "a new phone chip doubles battery life", "markets rallied after strong earnings"]


@pytest.fixture(scope="module")
def text_model() -> TransferModel:
    backbone = build_backbone("minilm")
    return TransferModel(backbone, ClassificationHead(backbone.feature_dim, 3))


def _batch(model: TransferModel) -> dict:
    examples = Examples("text", TEXTS, None, "inline")
    return next(iter(make_loader(examples, model.backbone.preprocessing, None, len(TEXTS))))


@pytest.mark.parametrize("name,marker,updated", [("lora", "lora_", "lora_B"), ("ia3", "ia3_", "ia3_")])
def test_adapter_trains_under_one_percent_and_merges_exactly(name: str, marker: str, updated: str):
    backbone = build_backbone("minilm")
    model = TransferModel(backbone, ClassificationHead(backbone.feature_dim, 3))
    strategy = build_strategy(name)
    strategy.prepare(model, StrategyContext(n_classes=3, seed=0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for n, p in model.named_parameters() if marker not in n)
    assert trainable and all(marker in n or n.startswith("head.") for n in trainable)
    assert any("value" in n for n in trainable)
    assert n_trainable / n_total <= 0.01, f"{n_trainable} of {n_total}"
    with torch.no_grad():  # give the adapters a non-identity update, as training would
        for n, p in model.named_parameters():
            if updated in n or n.startswith("head."):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))) * 0.05)
    model.eval()
    batch = _batch(model)
    with torch.inference_mode():
        unmerged = model(batch)
    merged_model = strategy.finalize(model)
    assert not any(marker in k or "base_layer" in k for k in merged_model.state_dict()), "plain architecture expected"
    with torch.inference_mode():
        merged = merged_model(batch)
    assert (merged - unmerged).abs().max().item() <= 1e-4
    plain = build_backbone("minilm")  # the merged weights differ from the pretrained ones: the update is in them
    q = "encoder.layer.0.attention.self.value.weight"
    assert not torch.equal(merged_model.backbone.model.state_dict()[q], plain.model.state_dict()[q])


def test_unknown_target_modules_is_a_config_error(text_model: TransferModel):
    model = TransferModel(build_backbone("minilm"), ClassificationHead(384, 3))
    with pytest.raises(ConfigError, match="target_modules"):
        build_strategy("lora", {"target_modules": ("no_such_layer",)}).prepare(model, StrategyContext(3, 0))
    with pytest.raises(ConfigError):
        build_strategy("lora", {"rank": 0})


@pytest.mark.parametrize("raw", ["[query]", "query", "[query, key]", "query,key", '["query", "key"]'])
def test_target_modules_from_the_command_line_are_layer_names_never_letters(raw: str):
    """-o target_modules=[query] (bare list), =query (bare name) and the JSON form all name layers; LoRA then adapts
    exactly those (before, a bare list reached peft as the string '[query]' and peft matched its letters)."""
    from transferkit.cli.common import _parse_options

    options = _parse_options([f"target_modules={raw}"])
    strategy = build_strategy("lora", options)
    expected = ("query",) if "key" not in raw else ("query", "key")
    assert strategy.config.target_modules == expected
    assert build_strategy("ia3", {"target_modules": raw}).config.target_modules == expected
    model = TransferModel(build_backbone("minilm"), ClassificationHead(384, 3))
    strategy.prepare(model, StrategyContext(n_classes=3, seed=0))
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters()
               if p.requires_grad and "lora_" in n}
    assert adapted == set(expected)


@pytest.mark.parametrize("raw", ["[]", [1, 2], 3])
def test_target_modules_that_name_no_layer_are_refused(raw):
    with pytest.raises(ConfigError, match=r"'target_modules' option is a list of layer names, e.g. -o target_m"):
        build_strategy("lora", {"target_modules": raw})


def test_lora_bundle_reloads_and_predicts_identically(digits_folder: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = api.fit(str(digits_folder), model="efficientnet_lite0", strategy="lora", image_size=32, epochs=2,
                     out=str(out), progress=False, seed=0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    assert metrics["trainable_params"] > 3 * 3 + 1280 * 3, "LoRA parameters are counted, not only the head"
    weights = load_file(str(out / "bundle" / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in weights)
    again = api.predict(result.bundle_dir, str(digits_folder), progress=False)
    first = result.predictor().predict(load_source(digits_folder).train, progress=False)
    assert again.labels == first.labels
    torch.testing.assert_close(torch.as_tensor(again.probabilities), torch.as_tensor(first.probabilities))


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_adapter_file_rebuilds_a_bn_train_bundle(name: str, make_digit_folder, tmp_path: Path):
    """bn=train moves the batch-norm statistics: adapter.safetensors carries them, so the model rebuilt from the
    pretrained backbone and the adapter file alone is the bundle's model, tensor for tensor."""
    data = make_digit_folder(per_class=5)
    result = api.fit(str(data), model="efficientnet_lite0", strategy=name, image_size=32, epochs=1, progress=False,
                     out=str(tmp_path / name), baseline=False, strategy_options={"bn": "train"}, seed=0)
    bundle = load_bundle(result.bundle_dir)
    rebuilt = model_from_adapter(result.bundle_dir)
    expected = bundle.model.state_dict()
    assert set(rebuilt.state_dict()) == set(expected)
    for key, value in rebuilt.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=1e-5, rtol=0, msg=key)
    examples = load_source(data).train
    logits, _ = predict_logits(bundle.model, make_loader(examples, bundle.preprocessing, None, 8), "fp32")
    again, _ = predict_logits(rebuilt, make_loader(examples, bundle.preprocessing, None, 8), "fp32")
    np.testing.assert_allclose(again, logits, atol=1e-4, rtol=0)


def test_adapter_file_without_trained_bn_statistics_is_refused(make_digit_folder, tmp_path: Path):
    """An adapter file of a bn=train run that lacks the statistics (written before they were saved) would rebuild a
    different model: refused, naming the file and the way out."""
    data = make_digit_folder(per_class=5)
    result = api.fit(str(data), model="efficientnet_lite0", strategy="lora", image_size=32, epochs=1, progress=False,
                     out=str(tmp_path / "run"), baseline=False, strategy_options={"bn": "train"}, seed=0)
    path = result.bundle_dir / "adapter.safetensors"
    save_file({k: v for k, v in load_file(str(path)).items() if "running_" not in k and "num_batches" not in k},
              str(path))
    with pytest.raises(BundleError, match="batch-norm statistics.*model.safetensors"):
        model_from_adapter(result.bundle_dir)
