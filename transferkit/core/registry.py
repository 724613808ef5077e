"""Name -> object lookup with "did you mean" hints, shared by every registry (models, strategies, datasets).

Imports only transferkit.core.errors.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

from transferkit.core.errors import UnknownNameError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]`` or raise an error that lists the valid names and the closest match."""
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    valid = ", ".join(sorted(registry))
    raise UnknownNameError(f"Unknown {kind} '{name}'.{hint} Valid names: {valid}.")
