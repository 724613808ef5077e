"""The strategy contract over audio: every registered strategy on 3 pitches x 4 tone clips (1-2 s, mixed rates,
channels and formats) cut to 1-second clips, through both audio backbones (whisper-tiny-en, speech-embedding).

Each strategy either refuses the backbone with a ConfigError that names what works (the text-only adapter and
prompt), or: the step-0 loss is ln(K) with a fresh head (below it with a probed head), one step moves no frozen
parameter and does move the head, a few steps lower the loss, the finalized model predicts like the trained one,
and a bundle saved from it reloads and predicts the same logits (merged LoRA/IA3 included). Plus: LoRA adapts
Whisper's attention projections, the whisper-tiny-en-l2 student is whisper-tiny-en's layers 0 and 2, and a
distillation teacher refuses a student that reads its audio differently.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_tone_folder
from tests.strategies.helpers import (
    Task,
    changed_keys,
    eval_logits,
    finalized_copy,
    optimizer_for,
    snapshot,
    train_steps,
)
from transferkit.backbones import build_backbone
from transferkit.core.errors import ConfigError
from transferkit.export.bundle import load_bundle, save_bundle
from transferkit.strategies import STRATEGIES, build_strategy
from transferkit.strategies.distill import Teacher

CLIP = 1.0
K = 3
BACKBONES = ("whisper-tiny-en", "speech-embedding")
TEXT_ONLY = sorted(name for name, cls in STRATEGIES.items() if "audio" not in cls.modalities
                   and cls.modalities == ("text",))
AUDIO_STRATEGIES = sorted(set(STRATEGIES) - set(TEXT_ONLY))
# Head LR per strategy: 'head' alone on frozen features moves slowly at the backbone-safe 3e-3; lp-ft's probed head
# already fits the 12 clips (loss ~0.14), and at 3e-3 AdamW's first Whisper steps move the features more than that
# head tolerates (loss up to 1.3, recovering by step 5): a probed head is fine-tuned gently, as for regression
LR = {"head": 3e-2, "lp-ft": 1e-4}
STEPS = 6


@pytest.fixture(scope="module")
def tone_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tones = {"high": 880.0, "mid": 440.0, "low": 220.0}
    return write_tone_folder(tmp_path_factory.mktemp("tones3") / "clips", per_class=4, tones=tones)


@pytest.fixture(scope="module")
def audio_tasks(tone_clips: Path) -> dict[str, Task]:
    return {name: Task(tone_clips, split=0, backbone=name, clip_seconds=CLIP) for name in BACKBONES}


def test_every_strategy_but_the_text_only_ones_runs_on_audio():
    """Guards the parametrisation: a strategy that starts refusing audio must be listed here on purpose."""
    assert TEXT_ONLY == ["adapter", "prompt", "setfit"]
    assert {"linear-probe", "head", "partial", "gradual", "lp-ft", "finetune", "l2sp", "lora", "ia3", "scratch",
            "distill"} <= set(AUDIO_STRATEGIES)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", TEXT_ONLY)
def test_text_only_strategies_refuse_audio_naming_what_works(audio_tasks: dict[str, Task], name: str,
                                                            backbone: str):
    task = audio_tasks[backbone]
    strategy = build_strategy(name)
    with pytest.raises(ConfigError, match=rf"The {name} strategy adapts text backbones only, not {backbone} "
                                          r"\(audio\); for audio use lora or ia3"):
        strategy.prepare(task.model(strategy), task.context(task.model(strategy)))


def _manifest(model) -> dict:
    bb = model.backbone
    return {"backbone": {"name": bb.name, "architecture": bb.architecture(), "pretrained_sha256": bb.weights_sha256,
                         "feature_dim": bb.feature_dim},
            "task": "classification", "labels": ["high", "low", "mid"], "preprocessing": bb.preprocessing.to_dict(),
            **({"head": model.head.spec()} if hasattr(model.head, "spec") else {})}  # protonet: a prototype head


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", AUDIO_STRATEGIES)
def test_strategy_trains_on_audio_and_its_bundle_predicts_the_same(audio_tasks: dict[str, Task], name: str,
                                                                   backbone: str, tmp_path: Path):
    task = audio_tasks[backbone]
    strategy = build_strategy(name)
    model = task.model(strategy)
    ctx = task.context(model)
    strategy.prepare(model, ctx)
    batch = task.batch(model, 12, shuffle_seed=None)
    assert len(set(batch["labels"].tolist())) == K
    if strategy.trains_with_loop:
        _check_training(strategy, model, ctx, batch, name)
    else:  # the linear probe: a closed-form head on cached features, nothing left to train
        assert not any(p.requires_grad for p in model.parameters())
    reference = eval_logits(model, batch)
    final = finalized_copy(strategy, model)
    with torch.inference_mode():  # merged adapters change the fp32 rounding: 1e-4, as the image contract
        np.testing.assert_allclose(final(batch).numpy(), reference.numpy(), atol=1e-4, rtol=0)
    folder = save_bundle(tmp_path / "bundle", final, _manifest(final))
    loaded = load_bundle(folder)
    assert loaded.preprocessing.clip_seconds == CLIP and loaded.model.backbone.name == backbone
    with torch.inference_mode():
        np.testing.assert_array_equal(loaded.model(batch).numpy(), final(batch).numpy())
    if name in ("linear-probe", "lp-ft"):  # three tones are linearly separable in both feature spaces
        assert (reference.argmax(1) == batch["labels"]).all()


def _check_training(strategy, model, ctx, batch, name: str) -> None:
    fresh = all(torch.count_nonzero(p) == 0 for p in model.head.parameters())
    strategy.on_epoch_start(model, 0)
    strategy.train_mode(model)
    with torch.no_grad():
        step0 = strategy.training_step(model, batch, ctx).item()
    if fresh and not strategy.needs_teacher and name != "maml":
        assert step0 == pytest.approx(math.log(K), rel=0.1)
    elif not fresh or name == "maml":  # lp-ft's probed head, protonet's prototypes beat chance from the first step;
        # maml's loss is the query loss after its inner loop adapted the zero head to the support
        assert step0 < math.log(K)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    before = snapshot(model)
    optimizer = optimizer_for(strategy, model, lr=LR.get(name, 3e-3), weight_decay=0.05)
    losses = train_steps(model, strategy, ctx, batch, optimizer, steps=STEPS, clip=1.0)
    assert all(math.isfinite(x) for x in losses), losses
    changed = changed_keys(model, before) & {n for n, _ in model.named_parameters()}
    assert not changed & frozen, f"frozen parameters changed: {sorted(changed & frozen)[:5]}"
    head = {f"head.{n}" for n, _ in model.head.named_parameters()}  # linear: weight, bias; protonet: its scale
    assert head and head <= changed, "the head must learn"
    if fresh:
        assert min(losses[1:]) < step0, f"{name}: the loss never went below its step-0 value {step0}: {losses}"
    else:
        assert max(losses) < math.log(K), f"{name}: training lost the probe's head: {losses}"


def test_lora_adapts_the_whisper_attention_projections(audio_tasks: dict[str, Task]):
    strategy, model, _ = audio_tasks["whisper-tiny-en"].prepared("lora")
    adapted = {n.rsplit(".lora_", 1)[0] for n, p in model.backbone.named_parameters() if p.requires_grad}
    projections = {f"model.layers.{i}.self_attn.{proj}" for i in range(4)
                   for proj in ("q_proj", "k_proj", "v_proj", "out_proj")}
    assert adapted == projections
    final = strategy.finalize(model)
    assert not any("lora_" in n for n, _ in final.named_parameters()), "finalize merges and unwraps the layers"


def test_lora_and_ia3_adapt_the_speech_embedding_convolutions(audio_tasks: dict[str, Task]):
    for name in ("lora", "ia3"):
        _, model, _ = audio_tasks["speech-embedding"].prepared(name)
        adapted = {n.rsplit(f".{name}_", 1)[0] for n, p in model.backbone.named_parameters() if p.requires_grad}
        assert len(adapted) == 19 and all(n.endswith(".conv") for n in adapted), sorted(adapted)[:3]


def test_the_whisper_student_is_layers_0_and_2_of_the_teacher():
    teacher, student = (build_backbone(n, clip_seconds=CLIP) for n in ("whisper-tiny-en", "whisper-tiny-en-l2"))
    assert len(student.model.layers) == 2 and student.model.config.encoder_layers == 2
    t, s = teacher.model.state_dict(), student.model.state_dict()
    for ours, theirs in ((0, 0), (1, 2)):
        layer = {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith(f"layers.{ours}.")}
        assert all(torch.equal(v, t[f"layers.{theirs}.{k}"]) for k, v in layer.items()) and layer
    assert torch.equal(s["embed_positions.weight"], t["embed_positions.weight"])
    assert student.preprocessing == teacher.preprocessing and student.weights_sha256 != teacher.weights_sha256
    assert sum(p.numel() for p in student.parameters()) < 0.6 * sum(p.numel() for p in teacher.parameters())


def test_a_teacher_refuses_a_student_that_reads_audio_differently(audio_tasks: dict[str, Task]):
    whisper = audio_tasks["whisper-tiny-en"].teacher()
    spec = whisper.backbone.preprocessing
    labels = ["high", "low", "mid"]
    student = build_backbone("whisper-tiny-en-l2", clip_seconds=CLIP).preprocessing
    assert Teacher(whisper, labels, labels, spec, student).teacher_spec is spec  # the same log-mel front end
    raw = audio_tasks["speech-embedding"].teacher().backbone.preprocessing
    with pytest.raises(ConfigError, match=r"reads audio differently from the student model \(a "
                                          r"WhisperFeatureExtractor vs raw waveforms\).*whisper-tiny-en-l2"):
        Teacher(whisper, labels, labels, spec, raw)
    with pytest.raises(ConfigError, match=r"\(1-second clips vs 2-second clips\)"):
        Teacher(whisper, labels, labels, spec, student.with_clip_seconds(2.0))
    assert json.loads(Path(spec.feature_extractor, "preprocessor_config.json").read_text())["sampling_rate"] == 16000
