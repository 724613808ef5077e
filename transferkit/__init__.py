"""transferkit: adapt pretrained models to your own labeled data — fit, evaluate, predict, save, load.

Public API: fit / evaluate / predict / load (transferkit.api) and the sklearn-style TransferClassifier and
TransferRegressor. They load on first use (a module ``__getattr__``, PEP 562): ``import transferkit`` and the CLI's
start import no torch. Importing the package makes forked child processes run torch on one thread
(transferkit.core.processes, which imports nothing heavy).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from transferkit.core.processes import install_fork_guard

if TYPE_CHECKING:
    from transferkit.api import FitResult, evaluate, fit, load, predict
    from transferkit.config import FitConfig
    from transferkit.estimator import TransferClassifier, TransferRegressor
    from transferkit.train.config import TrainConfig

install_fork_guard()

__version__ = "0.1.0"
__all__ = ["FitConfig", "FitResult", "TrainConfig", "TransferClassifier", "TransferRegressor", "evaluate", "fit",
           "load", "predict"]
_HOMES = {"FitResult": "transferkit.api", "evaluate": "transferkit.api", "fit": "transferkit.api",
          "load": "transferkit.api", "predict": "transferkit.api", "FitConfig": "transferkit.config",
          "TransferClassifier": "transferkit.estimator", "TransferRegressor": "transferkit.estimator",
          "TrainConfig": "transferkit.train.config"}

# The subpackage transferkit.evaluate shares its name with the function: loaded now (it is a docstring), so that
# importing its modules later never rebinds `transferkit.evaluate`, and unbound so that __getattr__ gives the function.
importlib.import_module("transferkit.evaluate")
del globals()["evaluate"]


def __getattr__(name: str) -> Any:
    """The public names, imported from their module on first use (then bound here), and submodules
    (``transferkit.api``: the package used to import them all at once); AttributeError for other names."""
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule exists but one of its imports is missing
                raise
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
