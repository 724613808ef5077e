"""The torch-free catalog `transferkit list` prints agrees with the registries it stands for."""
from __future__ import annotations

import subprocess
import sys

from transferkit.backbones import BACKBONES, DESCRIPTIONS
from transferkit.core.catalog import MODEL_DESCRIPTIONS, STRATEGY_SUMMARIES
from transferkit.strategies import STRATEGIES


def test_every_registered_backbone_has_a_description_and_every_plain_name_a_builder() -> None:
    plain_names = {name for name in MODEL_DESCRIPTIONS if "<" not in name}  # 'timm:<name>' etc. are patterns
    assert plain_names == set(BACKBONES)
    assert DESCRIPTIONS is MODEL_DESCRIPTIONS


def test_strategy_summaries_are_the_classes_summaries_in_registry_order() -> None:
    assert list(STRATEGY_SUMMARIES) == list(STRATEGIES)
    assert {name: cls.summary for name, cls in STRATEGIES.items()} == STRATEGY_SUMMARIES


def test_listing_models_and_strategies_imports_no_torch() -> None:
    code = ("import sys\nfrom transferkit.cli.listing import _models, _strategies\n"
            "assert _models() and _strategies()\nprint(sorted(m for m in ('torch', 'numpy', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
