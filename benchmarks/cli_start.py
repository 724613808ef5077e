"""CLI start (issue 17): CPU seconds and peak memory of `transferkit --help` & co, before and after, in one run.

Each command runs as a child process; its cost is the child's own rusage (user + system CPU seconds, max RSS), read
with os.wait4, plus the wall time. "Before" is another commit (default 99d6aca, the CLI as one 870-line module that
imported torch at start) checked out with `git worktree add` (never stash); both versions run with this venv's
python as `python -c "from transferkit.cli import main; main()" ARGS` from their own tree (PYTHONPATH and the
working directory point at it), alternating before/after within each repeat so that load on the machine hits both.
Prints a table (median and range over the repeats) and writes benchmarks/results/cli_start.json.
Goal: `--help`, every command's `--help` and `list` well under 1 CPU s and 150 MB.

    .venv/bin/python benchmarks/cli_start.py                       # 3 repeats, before = 99d6aca in /tmp/tk-old
    .venv/bin/python benchmarks/cli_start.py --repeats 5 --before-ref HEAD~3 --before-tree /tmp/tk-before
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cli_start.json"
MAIN = "import sys; sys.argv[0] = 'transferkit'; from transferkit.cli import main; main()"
COMMANDS = {  # label -> python arguments
    "transferkit --help": ["-c", MAIN, "--help"],
    "transferkit fit --help": ["-c", MAIN, "fit", "--help"],
    "transferkit list datasets": ["-c", MAIN, "list", "datasets"],
    "transferkit list models": ["-c", MAIN, "list", "models"],
    "transferkit list strategies": ["-c", MAIN, "list", "strategies"],
    'python -c "import transferkit"': ["-c", "import transferkit"],
}
GOAL_CPU_S, GOAL_RSS_MB = 1.0, 150.0


def measure(tree: Path, args: list[str]) -> dict[str, float]:
    """One run of ``python ARGS`` from ``tree``: the child's CPU seconds, max RSS (MB) and wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}
    start = datetime.now(timezone.utc)
    proc = subprocess.Popen([sys.executable, *args], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (datetime.now(timezone.utc) - start).total_seconds()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{tree}: python {' '.join(args[2:] or args)} exited {code}: {proc.stderr.read()[-2000:]}")
    proc.stderr.close()
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024, "wall_s": wall}


def summary(runs: list[dict[str, float]]) -> dict[str, dict]:
    """Per quantity: median, min, max and the runs, rounded."""
    return {key: {"median": round(statistics.median(r[key] for r in runs), 3),
                  "min": round(min(r[key] for r in runs), 3), "max": round(max(r[key] for r in runs), 3),
                  "runs": [round(r[key], 3) for r in runs]} for key in ("cpu_s", "max_rss_mb", "wall_s")}


def ensure_tree(ref: str, tree: Path) -> str:
    """A checkout of ``ref`` at ``tree`` (git worktree add when absent); its commit."""
    if not (tree / "transferkit").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True,
                       capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, check=True, capture_output=True,
                          text=True).stdout.strip()


def origin(tree: Path) -> str:
    """Where ``import transferkit`` resolves from ``tree`` (guards against measuring the wrong checkout)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('transferkit').origin)"],
                          cwd=tree, env=env, check=True, capture_output=True, text=True).stdout.strip()


def table(results: dict) -> list[str]:
    def cell(s: dict) -> str:
        return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"

    lines = [f"{'command':32} {'CPU s before':>20} {'CPU s after':>18} {'x less':>7} {'MB before':>10} {'MB after':>9}"]
    for label, row in results["commands"].items():
        b, a = row["before"], row["after"]
        lines.append(f"{label:32} {cell(b['cpu_s']):>20} {cell(a['cpu_s']):>18} {row['cpu_ratio']:>7.1f} "
                     f"{b['max_rss_mb']['median']:>10.0f} {a['max_rss_mb']['median']:>9.0f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before-ref", default="99d6aca")
    parser.add_argument("--before-tree", type=Path, default=Path("/tmp/tk-old"))
    args = parser.parse_args()
    trees = {"before": args.before_tree, "after": ROOT}
    commits = {"before": ensure_tree(args.before_ref, args.before_tree),
               "after": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                                       text=True).stdout.strip()}
    for name, tree in trees.items():
        found = origin(tree)
        if not found.startswith(str(tree.resolve())):
            sys.exit(f"{name}: transferkit resolves to {found}, not under {tree}")
    runs: dict[str, dict[str, list]] = {label: {"before": [], "after": []} for label in COMMANDS}
    for repeat in range(args.repeats):
        for label, cmd in COMMANDS.items():
            for name in ("before", "after"):
                runs[label][name].append(measure(trees[name], cmd))
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    commands = {}
    for label, by_version in runs.items():
        row = {name: summary(r) for name, r in by_version.items()}
        row["cpu_ratio"] = round(row["before"]["cpu_s"]["median"] / row["after"]["cpu_s"]["median"], 1)
        row["goal_met"] = (row["after"]["cpu_s"]["max"] <= GOAL_CPU_S and
                           row["after"]["max_rss_mb"]["max"] <= GOAL_RSS_MB)
        commands[label] = row
    results = {"benchmark": "cli_start", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
               "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
               "repeats": args.repeats, "commits": commits,
               "goal": {"cpu_s": GOAL_CPU_S, "max_rss_mb": GOAL_RSS_MB}, "commands": commands}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(table(results)))
    print(f"goal (<= {GOAL_CPU_S} CPU s and <= {GOAL_RSS_MB:.0f} MB in every run) met by: "
          + ", ".join(label for label, row in commands.items() if row["goal_met"]))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
