"""`transferkit tune`: Optuna search on validation, then a re-fit of the best; takes fit's own option declarations.

Imports typer/rich, transferkit.cli.fit and the two config dataclasses (no torch) at start; transferkit.tune
only inside the command body.
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from transferkit.cli import cores
from transferkit.cli.app import app
from transferkit.cli.common import STRATEGY_FLAGS, _parse_options, console
from transferkit.cli.fit import fit

TUNE_EXAMPLES = """
Examples:

    transferkit tune --data news.csv --model minilm --strategy lora --trials 30 --out runs/tune-news

    transferkit tune --data photos/ --strategy finetune --trials 40 --timeout-minutes 120 --pruner hyperband

    transferkit tune --data news.csv --strategy lora --trials 30 --out runs/tune-news   # again: continue to 30

    # distributed: every worker, on any machine, then one plain run to re-fit the best
    transferkit tune --data news.csv --strategy lora --trials 100 --storage postgresql://user:pw@db/optuna --no-refit
    transferkit tune --data news.csv --strategy lora --trials 100 --storage postgresql://user:pw@db/optuna --out runs/best

Trials are scored on the validation split only (the test split is never read while searching); a fit option you
pass (--lr 3e-4, -o rank=8) is fixed and leaves the search space. OUT gets the re-fitted best run (bundle, report),
tune.json, optimization_history.png, param_importances.png and, without --storage, the study (study.db).
"""
TUNE_OWN = ("data", "strategy", "out", "trials", "timeout_minutes", "storage", "study", "pruner", "refit")


def tune(**given: object) -> None:
    """Search hyper-parameters with Optuna on validation, then re-fit the best configuration as a normal run."""
    cores.claim()  # torch threads from the idle cores, before torch loads
    from transferkit.tune import tune as run_search

    own = {k: given.pop(k) for k in TUNE_OWN}
    pairs = given.pop("strategy_option")
    options = {k: v for k, v in given.items() if v is not None and v is not False and k not in STRATEGY_FLAGS}
    strategy_options = {**_parse_options(pairs), **{k: given[k] for k in STRATEGY_FLAGS if given.get(k) is not None}}
    if "unfreeze" in strategy_options and float(strategy_options["unfreeze"]).is_integer():
        strategy_options["unfreeze"] = int(strategy_options["unfreeze"])
    if strategy_options:
        options["strategy_options"] = strategy_options
    summary = run_search(own["data"], own["strategy"], trials=own["trials"], timeout_minutes=own["timeout_minutes"],
                         storage=own["storage"], study=own["study"], out=own["out"], pruner=own["pruner"],
                         refit=own["refit"], on_trial=lambda line: console.print(f"[tune] {escape(line)}"), **options)
    counts, best, default = summary["counts"], summary["best"], summary["default"]
    console.print(f"study '{escape(summary['study'])}' ({escape(summary['storage'])}): {counts['COMPLETE']} complete, "
                  f"{counts['PRUNED']} pruned, {counts['FAIL']} failed", highlight=False)
    if best is not None:
        console.print(f"best: trial {best['number']}, validation {summary['metric']} [bold]{best['value']:.4f}[/] "
                      f"({escape(', '.join(f'{k}={v}' for k, v in best['params'].items()))})", highlight=False)
    if default is not None and default["value"] is not None:
        console.print(f"default configuration (trial {default['number']}): {default['value']:.4f}", highlight=False)
    refit = summary.get("refit")
    if refit:
        for split, m in refit["metrics"].items():
            console.print(f"re-fit {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()
                                                         if isinstance(v, float)), highlight=False)
        console.print(f"bundle: {escape(refit['bundle'])}\nreport: {escape(refit['report'])}", highlight=False)
    console.print(f"wrote {escape(str(Path(summary['out']) / 'tune.json'))} and its plots", highlight=False)


def _tune_signature() -> None:
    """tune takes its own options plus fit's (their declarations reused, so the two never drift apart)."""
    import inspect

    from transferkit.config import FitConfig
    from transferkit.train.config import TrainConfig

    fit_options = {f for f in FitConfig.__dataclass_fields__} | {f for f in TrainConfig.__dataclass_fields__} | {
        *STRATEGY_FLAGS, "strategy_option", "strict", "dedupe"} - {"budget_minutes"}  # fit --strategy auto's own
    own = [
        inspect.Parameter("data", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
            ..., "--data", help="Image folder, .csv/.jsonl of texts, or builtin:NAME (its test split is not read).")),
        inspect.Parameter("strategy", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
            ..., help="The strategy whose search space to search (strategies/search.py).")),
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None, default=typer.Option(
            None, help="Folder for the re-fitted run, tune.json, plots and (without --storage) study.db.")),
        inspect.Parameter("trials", inspect.Parameter.KEYWORD_ONLY, annotation=int, default=typer.Option(
            20, help="Finished trials in the study in total; a re-run continues to this many.")),
        inspect.Parameter("timeout_minutes", inspect.Parameter.KEYWORD_ONLY, annotation=float | None,
                          default=typer.Option(None, help="Start no new trial after this long.")),
        inspect.Parameter("storage", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=typer.Option(
            None, help="Shared study: postgresql://, mysql:// or sqlite:/// URL, or a journal file path "
                       "[default: sqlite:///OUT/study.db].")),
        inspect.Parameter("study", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=typer.Option(
            None, help="Study name [default: transferkit-STRATEGY].")),
        inspect.Parameter("pruner", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
            "median", help="median | hyperband | none: stop trials whose validation score lags.")),
        inspect.Parameter("refit", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            True, "--refit/--no-refit", help="Re-fit the best into OUT (workers of a shared study: --no-refit).")),
    ]
    taken = {p.name for p in own} | {"resume"}
    borrowed = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(fit, eval_str=True)
                .parameters.values() if p.name in fit_options and p.name not in taken]
    tune.__signature__ = inspect.Signature([*own, *borrowed])
    tune.__annotations__ = {p.name: p.annotation for p in (*own, *borrowed)}


_tune_signature()
app.command(epilog=TUNE_EXAMPLES)(tune)
