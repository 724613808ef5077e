"""Gradual unfreezing (ULMFiT, Howard & Ruder 2018): head first, then one more block group per stage.

Imports transferkit.strategies. Stage s (epochs s*E .. s*E+E-1 for E = ``epochs_per_stage``) trains the head
and the top s block groups, each at its discriminative LR. The stage is a function of the epoch number only,
so a resumed run is in the same stage as the run it continues (Lightning's BackboneFinetuning re-froze on
resume); it is also saved in the checkpoint for the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferkit.core.catalog import STRATEGY_SUMMARIES
from transferkit.core.errors import ConfigError
from transferkit.strategies.finetune import Finetune, FinetuneConfig


@dataclass(frozen=True)
class GradualConfig(FinetuneConfig):
    epochs_per_stage: int = 1
    blocks_per_stage: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmup_head_epochs:
            raise ConfigError("gradual already trains the head alone in its first stage; use epochs_per_stage "
                              "(-o epochs_per_stage=N) instead of warmup_head_epochs.")
        for name in ("epochs_per_stage", "blocks_per_stage"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"The '{name}' parameter must be an int >= 1. Got {value!r} instead.")


class Gradual(Finetune):
    name = "gradual"
    config_class = GradualConfig
    summary = STRATEGY_SUMMARIES["gradual"]

    def __init__(self, config: GradualConfig | None = None):
        super().__init__(config)
        self.stage = 0

    def frozen_blocks(self, epoch: int, n_blocks: int) -> int:
        stage = epoch // self.config.epochs_per_stage  # stage 0 is head-only already
        return max(0, n_blocks - stage * self.config.blocks_per_stage)

    def on_epoch_start(self, model, epoch: int) -> None:
        super().on_epoch_start(model, epoch)
        self.stage = epoch // self.config.epochs_per_stage

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state.get("stage", 0))
