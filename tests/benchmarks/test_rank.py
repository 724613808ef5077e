"""benchmarks/rank.py: the agreement between an estimator and the achieved accuracy, on fixed rows."""
from __future__ import annotations

import pytest

from benchmarks.rank import correlations


def row(model: str, seed: int, logme: float, accuracy: float, leep: float | str = "n/a: no source classifier") -> dict:
    scores = {"logme": logme, "leep": leep, "nce": leep, "hscore": 1.0, "knn": accuracy, "linear": -accuracy}
    return {"dataset": "digits", "seed": seed, "model": model, "target": "finetune", "proxy": False, "scores": scores,
            "accuracy": accuracy}


def test_agreement_by_hand():
    rows = [row("a", 0, 0.1, 0.50), row("a", 1, 0.3, 0.70),  # means: a 0.2 / 0.60
            row("b", 0, 0.5, 0.90), row("b", 1, 0.5, 0.70),  # b 0.5 / 0.80
            row("c", 0, 0.9, 0.75), row("c", 1, 0.7, 0.75),  # c 0.8 / 0.75
            {"dataset": "digits", "seed": 0, "model": "d", "skipped": "not installed"}]
    by_estimator = {a["estimator"]: a for a in correlations(rows)}
    logme = by_estimator["logme"]
    # LogME order a < b < c, accuracy order a < c < b: pairs (a,b) +, (a,c) +, (b,c) -, tau = (2 - 1) / 3
    assert logme["kendall_tau"] == pytest.approx(1 / 3)
    assert logme["spearman_rho"] == pytest.approx(1 - 6 * (0 + 1 + 1) / (3 * 8))  # rank differences 0, 1, 1
    assert (logme["pick"], logme["top1"], logme["regret_points"]) == ("c", False, 5.0)
    assert by_estimator["knn"]["kendall_tau"] == pytest.approx(1.0) and by_estimator["knn"]["top1"]
    assert by_estimator["linear"]["kendall_tau"] == pytest.approx(-1.0)
    assert by_estimator["leep"]["n_models"] == 0 and by_estimator["leep"]["kendall_tau"] is None
    assert by_estimator["hscore"]["kendall_tau"] is None  # every backbone scores the same
