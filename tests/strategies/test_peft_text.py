"""Bottleneck adapters and soft prompts on the real MiniLM, and adapter.safetensors for every PEFT strategy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

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
         "a new phone chip doubles battery life"]


def _model(n_classes: int = 3) -> TransferModel:
    backbone = build_backbone("minilm")
    return TransferModel(backbone, ClassificationHead(backbone.feature_dim, n_classes))


def _batch(model: TransferModel) -> dict:
    examples = Examples("text", TEXTS, None, "inline")
    return next(iter(make_loader(examples, model.backbone.preprocessing, None, len(TEXTS))))


def _trainable_share(model: TransferModel) -> float:
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("placement, n_adapters, share", [("pfeiffer", 6, 0.01), ("houlsby", 12, 0.02)])
def test_adapters_start_as_the_pretrained_model_and_train_few_parameters(placement: str, n_adapters: int,
                                                                         share: float):
    model = _model()
    batch = _batch(model)
    with torch.inference_mode():
        plain = model.backbone.embed(batch)
    strategy = build_strategy("adapter", {"placement": placement})
    strategy.prepare(model, StrategyContext(n_classes=3, seed=0))
    model.eval()
    with torch.inference_mode():
        adapted = model.backbone.embed(batch)
    torch.testing.assert_close(adapted, plain, atol=1e-6, rtol=0)  # zero-initialised up-projections
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sum(n.endswith(".adapter.down.weight") for n in names) == n_adapters
    assert all(".adapter." in n or "LayerNorm" in n or n.startswith("head.") for n in names)
    assert _trainable_share(model) < share  # pfeiffer 0.55 %, houlsby 1.03 % of MiniLM


def test_soft_prompt_adds_virtual_tokens_but_pools_over_real_ones():
    model = _model()
    batch = _batch(model)
    strategy = build_strategy("prompt", {"num_virtual_tokens": 8})
    strategy.prepare(model, StrategyContext(n_classes=3, seed=0))
    out = model.backbone.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert out.last_hidden_state.shape[1] == batch["input_ids"].shape[1] + 8
    assert model.backbone.embed(batch).shape == (len(TEXTS), 384)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"backbone.model.prompt_encoder.default.embedding.weight", "head.linear.weight", "head.linear.bias"}
    assert _trainable_share(model) < 0.001
    prompt_lr = [g["lr"] for g in strategy.param_groups(model, 1e-3, 0.05) if len(g["params"]) == 1
                 and g["params"][0] is model.backbone.model.prompt_encoder.default.embedding.weight]
    assert prompt_lr == [pytest.approx(1e-3 * strategy.config.prompt_lr_scale)]


def test_p_tuning_trains_its_prompt_encoder():
    model = _model()
    strategy = build_strategy("prompt", {"method": "p-tuning", "num_virtual_tokens": 4})
    strategy.prepare(model, StrategyContext(n_classes=3, seed=0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "prompt_encoder" in n]
    assert any("mlp" in n for n in trainable), trainable
    loss = model.loss({**_batch(model), "labels": torch.tensor([0, 1, 2])})
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", ["adapter", "prompt"])
def test_text_only_strategies_refuse_an_image_backbone(name: str):
    backbone = build_backbone("efficientnet_lite0")
    model = TransferModel(backbone, ClassificationHead(backbone.feature_dim, 3))
    with pytest.raises(ConfigError, match="text"):
        build_strategy(name).prepare(model, StrategyContext(n_classes=3, seed=0))


@pytest.mark.parametrize("option", [{"placement": "middle"}, {"reduction": 0}])
def test_adapter_config_is_validated(option: dict):
    with pytest.raises(ConfigError):
        build_strategy("adapter", option)


@pytest.mark.parametrize("option", [{"method": "prefix"}, {"num_virtual_tokens": 0}, {"init": "TEXT"}])
def test_prompt_config_is_validated(option: dict):
    with pytest.raises(ConfigError):
        build_strategy("prompt", option)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adapter", "prompt", "lora", "ia3"])
def test_peft_bundle_reloads_and_its_adapter_file_rebuilds_the_model(name: str, text_csv: Path, tmp_path: Path):
    """The bundle reloads and evaluates; adapter.safetensors holds exactly what trained, and on top of the
    pretrained backbone it gives the bundle's logits (LoRA/IA3: after merging)."""
    result = api.fit(str(text_csv), model="minilm", strategy=name, epochs=1, out=str(tmp_path / name),
                     progress=False, baseline=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    manifest = json.loads((result.bundle_dir / "transferkit.json").read_text())
    adapter = load_file(str(result.bundle_dir / "adapter.safetensors"))
    assert sum(v.numel() for v in adapter.values()) == metrics["trainable_params"] == manifest["adapter"]["params"]
    assert metrics["trainable_params"] / metrics["total_params"] < 0.01
    assert {"head.linear.weight", "head.linear.bias"} <= set(adapter)

    again = api.evaluate(result.bundle_dir, str(text_csv), split="train", progress=False)
    assert again["n"] == 24
    bundle = load_bundle(result.bundle_dir)
    rebuilt = model_from_adapter(result.bundle_dir)
    examples = load_source(text_csv).train
    logits, _ = predict_logits(bundle.model, make_loader(examples, bundle.preprocessing, None, 8), "fp32")
    rebuilt_logits, _ = predict_logits(rebuilt, make_loader(examples, bundle.preprocessing, None, 8), "fp32")
    np.testing.assert_allclose(rebuilt_logits, logits, atol=1e-4, rtol=0)
    if name in ("adapter", "prompt"):  # modules that stay in the model also export (the prompt drops token_type_ids)
        entry = api.export(result.bundle_dir, tmp_path / f"{name}-onnx")
        assert entry["parity"]["max_abs_diff"] <= 1e-4 and entry["parity"]["top1_agreement"] == 1.0


def test_model_from_adapter_refuses_a_bundle_without_one(text_csv: Path, tmp_path: Path):
    result = api.fit(str(text_csv), model="minilm", strategy="linear-probe", out=str(tmp_path / "lp"),
                     progress=False, baseline=False)
    assert not (result.bundle_dir / "adapter.safetensors").exists()
    with pytest.raises(BundleError, match="PEFT"):
        model_from_adapter(result.bundle_dir)
