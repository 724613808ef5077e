"""Which epoch a run keeps when the task's validation score is not the one to trust: label-free selection.

Imports nothing from transferkit beyond tasks.model (types). By default the loop keeps the epoch with the best
task score on the labeled validation split (``Task.improves``). Domain adaptation validates on the *source*,
while the model is meant for the *target*, whose labels it never sees: there the api hands the loop a
``LabelFreeSelection`` whose ``score(model)`` adds columns to each epoch's history row (computed from source
validation and unlabeled target data only, e.g. deep embedded validation's ``dev_risk``) and whose ``key``
column then decides the kept epoch and early stopping, earliest on a tie. A row whose ``veto_key`` column is true
(e.g. the target predictions collapsed onto one class) loses to any row without the veto; among vetoed rows (all
epochs collapsed) the key decides as usual.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transferkit.tasks.model import TransferModel


@dataclass
class LabelFreeSelection:
    key: str  # the history column that selects (e.g. 'dev_risk')
    score: Callable[[TransferModel], dict[str, float]]  # the columns added to every validation row
    lower_is_better: bool = True
    name: str = ""  # how reports name the criterion
    veto_key: str | None = None  # a history column that, when true, puts the epoch behind every epoch without it

    def improves(self, row: dict[str, Any], best: float, best_vetoed: bool = False) -> bool:
        """Whether ``row`` beats ``best`` (a value of the same column; inf/-inf before any epoch, NaN when the kept
        epoch had no score); ``best_vetoed``: the kept epoch carries the veto."""
        value = row.get(self.key)
        if value is None or not math.isfinite(value):
            return False
        vetoed = bool(self.veto_key and row.get(self.veto_key))
        if vetoed != best_vetoed:  # an eligible epoch beats a vetoed one whatever their scores
            return best_vetoed
        if math.isnan(best):  # the kept epoch could not be scored: any score beats it
            return True
        return value < best if self.lower_is_better else value > best

    @property
    def worst(self) -> float:
        return math.inf if self.lower_is_better else -math.inf
