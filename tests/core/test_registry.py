"""transferkit.core.registry.lookup and the registries that use it."""
from __future__ import annotations

import pytest

from transferkit.core.errors import TransferkitError, UnknownNameError
from transferkit.core.registry import lookup

REGISTRY = {"finetune": 1, "linear-probe": 2, "scratch": 3}


def test_lookup_returns_the_entry():
    assert lookup(REGISTRY, "finetune", "strategy") == 1
    assert lookup(REGISTRY, "linear-probe", "strategy") == 2
    assert lookup(REGISTRY, "scratch", "strategy") == 3


def test_close_name_gets_a_did_you_mean_hint():
    with pytest.raises(UnknownNameError) as info:
        lookup(REGISTRY, "finetuen", "strategy")
    message = str(info.value)
    assert "Did you mean 'finetune'?" in message
    assert "Unknown strategy 'finetuen'" in message
    for name in REGISTRY:  # the message lists every valid name
        assert name in message


def test_far_name_lists_valid_names_without_a_hint():
    with pytest.raises(UnknownNameError) as info:
        lookup(REGISTRY, "zzzzzzzz", "strategy")
    message = str(info.value)
    assert "Did you mean" not in message
    assert "finetune, linear-probe, scratch" in message


def test_unknown_name_error_is_a_user_error_and_a_key_error_without_quotes():
    with pytest.raises(KeyError) as info:
        lookup(REGISTRY, "linear_probe", "strategy")
    assert isinstance(info.value, TransferkitError)
    # KeyError.__str__ would wrap the message in quotes; the CLI prints str(exc) so it must be the plain text
    assert str(info.value).startswith("Unknown strategy")
    assert "Did you mean 'linear-probe'?" in str(info.value)


def test_real_registries_use_lookup():
    from transferkit.backbones import build_backbone
    from transferkit.strategies import build_strategy

    with pytest.raises(UnknownNameError, match="Did you mean 'finetune'"):
        build_strategy("finetuen")
    with pytest.raises(UnknownNameError, match="Did you mean 'minilm'"):
        build_backbone("minilmm")
    assert build_strategy("finetune").name == "finetune"
