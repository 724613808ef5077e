"""fit --strategy auto: the rules, the counting, the budget fallbacks (fixed inputs), and two real runs."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import transferkit
from transferkit import auto, rank
from transferkit.auto_rules import RULES, rule_for
from transferkit.config import FitConfig
from transferkit.core.errors import ConfigError
from transferkit.data.examples import Examples
from transferkit.strategies import STRATEGIES


@pytest.mark.parametrize(("modality", "task", "per_class", "expected"), [
    ("image", "classification", 10, "l2sp"), ("image", "classification", 30, "l2sp"),
    ("image", "classification", 50, "finetune"), ("text", "classification", 8, "lp-ft"),
    ("text", "classification", 500, "lp-ft"), ("audio", "classification", 30, "linear-probe"),
    ("audio", "classification", 330, "finetune"), ("text", "regression", None, "finetune"),
    ("image", "multilabel", None, "finetune"), ("text", "tokens", None, "finetune"),
])
def test_rules_pick_the_benchmarks_best_strategy(modality, task, per_class, expected):
    assert rule_for(modality, task, per_class).strategy == expected


def test_every_rule_names_registered_strategies():
    for rule in RULES:
        assert rule.strategy in STRATEGIES and rule.runner_up in STRATEGIES, rule


def _examples(counts: dict[str, int], inputs: list | None = None) -> Examples:
    labels = [name for name, n in counts.items() for _ in range(n)]
    return Examples("image" if inputs else "text", inputs or ["x"] * len(labels), labels, "memory")


def test_labels_per_class_is_the_median_over_train_and_val():
    train, val = _examples({"a": 8, "b": 3, "c": 20}), _examples({"a": 2, "b": 1, "c": 4})
    assert auto.labels_per_class(train, val) == 10.0  # a 10, b 4, c 24
    assert auto.labels_per_class(train, None) == 8.0


def test_small_images_are_trained_at_64_px_and_photos_at_the_backbones_size():
    small = _examples({"a": 3}, [np.zeros((28, 28, 3), np.uint8)] * 3)
    large = _examples({"a": 3}, [np.zeros((300, 400, 3), np.uint8)] * 3)
    assert auto.choose_image_size(small)[0] == 64
    assert auto.choose_image_size(large)[0] is None


@pytest.mark.parametrize("options", [{"target_data": "x/"}, {"teacher": "b/"}, {"init_from": "b/"},
                                     {"strategy_options": {"unfreeze": 2}}])
def test_auto_refuses_what_it_cannot_honour(options):
    with pytest.raises(ConfigError, match="--strategy auto"):
        auto.check_request(FitConfig(strategy="auto", **options))


def test_budget_minutes_belongs_to_auto():
    with pytest.raises(ConfigError, match="max_minutes"):
        FitConfig(strategy="finetune", budget_minutes=5)
    with pytest.raises(ConfigError, match="> 0"):
        FitConfig(strategy="auto", budget_minutes=0)


CANDIDATES = [{"name": "big", "score": 2.0, "seconds_per_input": 0.5},
              {"name": "small", "score": 1.0, "seconds_per_input": 0.01}]


def _choose(budget: float | None, candidates=CANDIDATES):
    record = {"reasons": []}
    rule = rule_for("image", "classification", 10)  # l2sp: 3.2 forward passes per epoch
    cfg = FitConfig(strategy="auto", budget_minutes=budget)
    return auto._fit_budget(candidates, rule, cfg, 100, 200, 10, time.perf_counter(), record), record


def test_without_budget_the_best_ranked_backbone_and_the_rules_strategy():
    (model, strategy, estimate), record = _choose(None)
    assert (model, strategy, estimate) == ("big", "l2sp", None)
    assert "L2-SP" in record["reasons"][0]


def test_a_budget_passes_over_a_backbone_then_a_strategy_that_would_not_fit():
    # big: 0.5 s x (100 x 3.2 x 10 + 200) = 1,700 s; small: 34 s
    (model, strategy, estimate), record = _choose(10)
    assert (model, strategy) == ("small", "l2sp") and estimate == pytest.approx(34.0)
    assert any("big came first but l2sp on it would not fit" in r for r in record["reasons"])
    assert record["budget"]["estimated_minutes"] == pytest.approx(34 / 60, abs=0.01)
    assert record["budget_runner_up"] == ("big", "head") or record["budget_runner_up"] == ("small", "head")
    (model, strategy, _), record = _choose(2, [CANDIDATES[0]])  # 120 s: l2sp 1,700 and head 0.5 x (100 x 10 + 200)
    assert (model, strategy) == ("big", "linear-probe")  # = 600 s are over; the probe, 0.5 x 200 = 100 s, fits
    assert "would not fit --budget-minutes" in record["reasons"][0]


def test_a_budget_nothing_fits_is_refused():
    with pytest.raises(ConfigError, match="raise the budget"):
        _choose(0.01, [CANDIDATES[0]])


def test_auto_on_text_ranks_chooses_and_says_so(tmp_path: Path, text_csv: Path, monkeypatch):
    names = ["minilm-l3", "paraphrase-minilm-l3"]  # two small registered text backbones keep the test fast
    monkeypatch.setattr(rank, "candidate_names", lambda modality, models: names)
    result = transferkit.fit(str(text_csv), strategy="auto", epochs=1, out=str(tmp_path / "run"), progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    chosen = metrics["auto"]
    assert chosen["strategy"] == "lp-ft" and chosen["model"] in names
    assert [m["name"] for m in chosen["ranking"]["models"]][0] == chosen["model"]
    assert chosen["runner_up"]["model"] in names and chosen["runner_up"]["model"] != chosen["model"]
    manifest = json.loads((result.bundle_dir / "transferkit.json").read_text())
    assert manifest["strategy"]["name"] == "lp-ft" and manifest["backbone"]["name"] == chosen["model"]
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["strategy"] == "lp-ft" and config["model"] == chosen["model"]  # --resume goes on with the choice
    report = (result.run_dir / "report.md").read_text()
    assert f"Strategy auto chose {chosen['model']} with lp-ft" in report and "runner-up" in report
    transferkit.fit(resume=str(result.run_dir))  # a resumed auto run keeps the record of its choice
    assert json.loads((result.run_dir / "metrics.json").read_text())["auto"]["model"] == chosen["model"]


def test_auto_with_a_given_model_keeps_it_and_sizes_small_images(tmp_path: Path, digits_folder: Path):
    result = transferkit.fit(str(digits_folder), strategy="auto", model="efficientnet_lite0", epochs=1,
                             out=str(tmp_path / "run"), progress=False)
    chosen = json.loads((result.run_dir / "metrics.json").read_text())["auto"]
    assert chosen["model"] == "efficientnet_lite0" and chosen["strategy"] == "l2sp"  # 10 digits per class
    assert chosen["image_size"]["chosen"] == 64 and "ranking" not in chosen
    manifest = json.loads((result.bundle_dir / "transferkit.json").read_text())
    assert manifest["preprocessing"]["image_size"] == 64 and manifest["strategy"]["name"] == "l2sp"


def _informative(seed: int, n_per_class: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 classes: features that separate them (class mean + small noise) and pure-noise features of the same size."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    good = np.eye(3)[y] * 3 + rng.normal(0, 0.3, (len(y), 3))
    return good, rng.normal(0, 1, (len(y), 3)), y


def test_a_clear_lead_replaces_the_default_and_a_tie_keeps_it():
    good, noise, y = _informative(0)
    record = {"reasons": [], "ranking": {}}
    scored = [{"name": "other", "score": 1.0}, {"name": "default", "score": 0.0}]
    assert not auto._default_holds(scored, "default", {"other": good, "default": noise, "_y": y}, "classification",
                                   0, record)
    lead = record["ranking"]["lead_over_default"]
    assert lead["logme_lead"] > lead["margin_se"] * lead["standard_error"] > 0
    record = {"reasons": [], "ranking": {}}
    assert auto._default_holds(scored, "default", {"other": good, "default": good + 1e-9, "_y": y},
                               "classification", 0, record)
    assert "within 2 standard errors" in record["reasons"][0]


def test_too_few_labels_per_class_keep_the_default_without_a_test():
    good, noise, y = _informative(0, n_per_class=4)
    record = {"reasons": [], "ranking": {}}
    scored = [{"name": "other", "score": 1.0}, {"name": "default", "score": 0.0}]
    assert auto._default_holds(scored, "default", {"other": good, "default": noise, "_y": y}, "classification",
                               0, record)
    assert "4 training examples in the smallest class" in record["reasons"][0]


def test_auto_is_not_a_strategy_for_compare_or_tune():
    from transferkit.strategies import build_strategy

    with pytest.raises(ConfigError, match="fit --strategy auto"):
        build_strategy("auto")
