"""Error types that separate user mistakes (one line, exit code 2) from bugs (traceback).

Imports nothing from transferkit.
"""
from __future__ import annotations


class TransferkitError(Exception):
    """Base class for every error the user can fix; the CLI prints it as one line and exits with code 2."""


class DataError(TransferkitError):
    """The data the user pointed at is missing, empty, malformed or unusable."""


class ConfigError(TransferkitError, ValueError):
    """A parameter has an invalid value; the message names the parameter, the rule and the received value.

    ``cli``: the same message in the command line's names (``--huber-delta`` for ``huber_delta=``), which the CLI
    prints instead; None when the message reads the same in both.
    """

    def __init__(self, message: str = "", cli: str | None = None):
        super().__init__(message)
        self.cli = cli


class UnknownNameError(TransferkitError, KeyError):
    """A registry lookup failed; the message lists valid names and the closest match."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class BackboneLoadError(TransferkitError):
    """Pretrained weights could not be loaded (no network, missing file, wrong format)."""


class BundleError(TransferkitError):
    """A saved bundle is missing, incomplete or inconsistent."""


class CheckpointError(TransferkitError):
    """A training checkpoint is incomplete, damaged or not in transferkit's format (never unpickled to find out)."""


class NotFittedError(TransferkitError, AttributeError):
    """An estimator was used before `fit`."""


class TrainingDiverged(TransferkitError):
    """The loss or gradients became NaN/inf before any epoch finished; the message says what to change."""


class TrainingInterrupted(TransferkitError):
    """Training stopped on request (SIGTERM) after writing a checkpoint; ``fit --resume RUN_DIR`` continues it."""

    exit_code = 143  # 128 + SIGTERM, what shells and schedulers expect from a process that was asked to stop
