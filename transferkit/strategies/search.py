"""Each strategy's hyper-parameter search space for `transferkit tune`: SEARCH_SPACES, strategy name -> space.

Imports nothing from transferkit (and not optuna: a space only calls ``suggest_float``/``suggest_int``/
``suggest_categorical`` on the trial it is given). A space returns {parameter: value}; a parameter is named
after the field it sets, a TrainConfig field (lr, weight_decay, epochs) or an option of the strategy's config
(rank, alpha, backbone_lr_scale, ...), so tune.json's best parameters read as fit options. Every range holds
the default value (tune's first trial is the default configuration; tests/strategies/test_search.py checks it).
Spaces are small on purpose: the few knobs that decide most results, on log scales where they act as ratios.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

Space = Callable[[Any], dict[str, Any]]


def _loop(trial: Any, lr: tuple[float, float] = (1e-4, 1e-2), weight_decay: bool = True) -> dict[str, Any]:
    """What every loop-trained strategy searches: the head's learning rate, weight decay and the epoch count
    (the cosine schedule spans the epochs, so it changes the learning-rate curve as well as the length)."""
    params = {"lr": trial.suggest_float("lr", *lr, log=True), "epochs": trial.suggest_int("epochs", 3, 15)}
    if weight_decay:
        params["weight_decay"] = trial.suggest_float("weight_decay", 1e-4, 0.3, log=True)
    return params


def _finetune(trial: Any, weight_decay: bool = True) -> dict[str, Any]:
    """Layer-wise fine-tuning: how fast the top backbone block learns relative to the head, and how much slower
    each earlier block goes."""
    return {**_loop(trial, weight_decay=weight_decay),
            "backbone_lr_scale": trial.suggest_float("backbone_lr_scale", 0.03, 1.0, log=True),
            "layer_decay": trial.suggest_float("layer_decay", 0.5, 1.0)}


def head_space(trial: Any) -> dict[str, Any]:
    return _loop(trial, lr=(1e-4, 3e-2))


def partial_space(trial: Any) -> dict[str, Any]:
    return {**_finetune(trial), "unfreeze": trial.suggest_int("unfreeze", 1, 4)}


def prompt_space(trial: Any) -> dict[str, Any]:
    return {**_loop(trial, lr=(1e-4, 3e-2)),
            "prompt_lr_scale": trial.suggest_float("prompt_lr_scale", 1.0, 30.0, log=True),
            "num_virtual_tokens": trial.suggest_categorical("num_virtual_tokens", [8, 16, 32])}


def adapter_space(trial: Any) -> dict[str, Any]:
    return {**_loop(trial, lr=(1e-4, 3e-2)), "reduction": trial.suggest_categorical("reduction", [8, 16, 32])}


def lora_space(trial: Any) -> dict[str, Any]:
    """The update is scaled by alpha / rank: searching both lets the scale move independently of the capacity."""
    return {**_loop(trial, lr=(1e-4, 3e-2)), "rank": trial.suggest_categorical("rank", [4, 8, 16]),
            "alpha": trial.suggest_float("alpha", 4.0, 64.0, log=True)}


def l2sp_space(trial: Any) -> dict[str, Any]:
    """No weight decay: the L2-SP penalty replaces it (L2SP.param_groups); alpha is the pull toward the
    pretrained weights."""
    return {**_finetune(trial, weight_decay=False), "alpha": trial.suggest_float("alpha", 1e-4, 1.0, log=True)}


def distill_space(trial: Any) -> dict[str, Any]:
    return {**_finetune(trial), "temperature": trial.suggest_float("temperature", 1.0, 8.0, log=True),
            "alpha": trial.suggest_float("alpha", 0.5, 1.0)}


def domain_space(trial: Any) -> dict[str, Any]:
    """dann, coral, mmd: fine-tuning plus the weight of the domain loss (tune selects on the labeled source's
    validation split; label-free selection on the target is the report's business)."""
    return {**_finetune(trial), "weight": trial.suggest_float("weight", 0.1, 10.0, log=True)}


def self_train_space(trial: Any) -> dict[str, Any]:
    """self-train: fine-tuning, the weight of the pseudo-label loss and the confidence a pseudo-label needs."""
    return {**domain_space(trial), "threshold": trial.suggest_float("threshold", 0.8, 0.99)}


def protonet_space(trial: Any) -> dict[str, Any]:
    """protonet: episodic fine-tuning (the head's only parameter is the temperature) and the episode's shots."""
    return {**_finetune(trial), "k_shot": trial.suggest_int("k_shot", 1, 10)}


def setfit_space(trial: Any) -> dict[str, Any]:
    """setfit: the body's learning rate (relative to the head's, whose head is refitted in closed form anyway)
    and how many pairs each example gets per epoch."""
    return {**_loop(trial), "backbone_lr_scale": trial.suggest_float("backbone_lr_scale", 0.005, 0.1, log=True),
            "num_iterations": trial.suggest_int("num_iterations", 5, 40, log=True)}


def maml_space(trial: Any) -> dict[str, Any]:
    """maml: partial's knobs, how long the meta-training lasts and how much the inner loop adapts."""
    return {**partial_space(trial), "meta_epochs": trial.suggest_int("meta_epochs", 0, 5),
            "inner_steps": trial.suggest_int("inner_steps", 1, 10), "k_shot": trial.suggest_int("k_shot", 1, 10)}


def no_space(trial: Any) -> dict[str, Any]:
    """linear-probe: a closed-form head that picks its own regularisation on the training data; nothing to tune."""
    return {}


# One entry per STRATEGIES name (tests/strategies/test_search.py checks both registries agree).
SEARCH_SPACES: dict[str, Space] = {
    "linear-probe": no_space,
    "head": head_space,
    "partial": partial_space,
    "gradual": _finetune,
    "prompt": prompt_space,
    "ia3": head_space,
    "adapter": adapter_space,
    "lora": lora_space,
    "lp-ft": _finetune,
    "finetune": _finetune,
    "l2sp": l2sp_space,
    "distill": distill_space,
    "dann": domain_space,
    "coral": domain_space,
    "mmd": domain_space,
    "self-train": self_train_space,
    "protonet": protonet_space,
    "setfit": setfit_space,
    "maml": maml_space,
    "scratch": _loop,
}
