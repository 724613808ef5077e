"""benchmarks/domain.py: what each row trains on, the share of the source-only -> oracle gap, and joining pieces."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.domain import fit_inputs, join, with_gaps


def row(method: str, accuracies: list[float], pair: str = "mnist-uci") -> dict:
    runs = [{"seed": s, "accuracy": a, "macro_f1": a, "seconds": 1.0} for s, a in enumerate(accuracies)]
    return {"pair": pair, "method": method, "n_test": 797, "seeds": len(runs), "runs": runs,
            "accuracy": {"mean": sum(accuracies) / len(accuracies), "std": 0.0}}


def test_fit_inputs():
    root = Path("/data")
    assert fit_inputs(root, "source-only") == {"data": "/data/source", "strategy": "finetune"}
    assert fit_inputs(root, "oracle") == {"data": "/data/target/train", "strategy": "finetune"}
    assert fit_inputs(root, "coral") == {"data": "/data/source", "strategy": "coral",
                                         "target_data": "/data/target/unlabeled"}


def test_gap_closed_is_the_share_of_source_only_to_oracle():
    rows = with_gaps([row("source-only", [0.4, 0.6]), row("oracle", [0.9, 0.9]), row("dann", [0.8, 0.7]),
                      row("coral", [0.3, 0.3]), row("mmd", [0.9], pair="fashion-restyled")])
    gaps = {r["method"]: r.get("gap_closed") for r in rows}
    assert gaps["dann"] == pytest.approx(0.625)  # (0.75 - 0.5) / (0.9 - 0.5)
    assert gaps["coral"] == pytest.approx(-0.5)  # worse than source-only: negative
    assert gaps["source-only"] is None and gaps["oracle"] is None
    assert gaps["mmd"] is None  # its pair has no source-only / oracle rows


def test_join_adds_seeds_and_a_later_run_wins():
    first = {"environment": {"date": "a"}, "rows": [row("dann", [0.5, 0.6])]}
    later = {"environment": {"date": "b"}, "rows": [row("dann", [0.5, 0.7, 0.8])]}
    later["rows"][0]["runs"] = later["rows"][0]["runs"][1:]  # seeds 1 and 2
    rows, environments = join([first, later])
    assert [r["seed"] for r in rows[0]["runs"]] == [0, 1, 2]
    assert rows[0]["accuracy"]["mean"] == pytest.approx((0.5 + 0.7 + 0.8) / 3)
    assert environments == [{"date": "a"}, {"date": "b"}]
