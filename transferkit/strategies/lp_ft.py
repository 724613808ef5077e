"""LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): linear probe, then fine-tune.

Imports transferkit.strategies.finetune. A random head's large early gradients flow into the backbone and
distort the features that made it worth transferring; starting from the probe's head, fine-tuning only has to
refine. The probe uses one global feature scale (not per-feature), because per-feature scaling gives
near-constant features huge weights that explode once fine-tuning moves them (seen as loss spikes on digits).
"""
from __future__ import annotations

from dataclasses import dataclass

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.strategies.finetune import Finetune, FinetuneConfig


@dataclass(frozen=True)
class LPFTConfig(FinetuneConfig):
    head_init: str = "probe"


class LPFT(Finetune):
    name = "lp-ft"
    config_class = LPFTConfig
    summary = STRATEGY_SUMMARIES["lp-ft"]
