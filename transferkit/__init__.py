"""transferkit: adapt pretrained models to your own labeled data — fit, evaluate, predict, save, load.

Public API: fit / evaluate / predict / load (transferkit.api) and the sklearn-style TransferClassifier and
TransferRegressor.
Importing the package makes forked child processes run torch on one thread (transferkit.core.processes).
"""
from transferkit.api import FitResult, evaluate, fit, load, predict
from transferkit.config import FitConfig
from transferkit.core.processes import install_fork_guard
from transferkit.estimator import TransferClassifier, TransferRegressor
from transferkit.train.config import TrainConfig

install_fork_guard()

__version__ = "0.1.0"
__all__ = ["FitConfig", "FitResult", "TrainConfig", "TransferClassifier", "TransferRegressor", "evaluate", "fit",
           "load", "predict"]
