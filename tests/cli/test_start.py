"""CLI start stays light: `import transferkit.cli`, every command's --help and `import transferkit` load no torch.

Each check runs in a fresh interpreter (this test process has long imported everything). The heavy libraries may
only be imported inside command bodies (transferkit.cli) or on first use of the Python API (transferkit/__init__.py).
The cost in CPU seconds and memory is measured by benchmarks/cli_start.py, not asserted here.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, VENV_BIN

HEAVY = ("torch", "torchvision", "timm", "transformers", "sklearn", "scipy", "matplotlib", "fastapi", "uvicorn",
         "onnx", "onnxruntime", "peft", "optuna", "accelerate", "PIL", "numpy")
COMMANDS = ["fit", "compare", "evaluate", "predict", "export", "serve", "doctor", "list", "rank", "tune", "pretrain",
            "enroll"]


def _python(code: str, env: dict[str, str]) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_import_every_help_and_every_list_load_no_heavy_library(cli_env: dict[str, str]):
    out = _python(f"""
        import json, sys
        from typer.testing import CliRunner
        from transferkit.cli import app
        heavy = {HEAVY!r}
        after_import = [m for m in heavy if m in sys.modules]
        runs = [["--help"]] + [[c, "--help"] for c in {COMMANDS!r}]
        codes = {{" ".join(a): CliRunner().invoke(app, a).exit_code for a in runs}}
        after_help = [m for m in heavy if m in sys.modules]
        listed = {{what: CliRunner().invoke(app, ["list", what]) for what in ("datasets", "models", "strategies")}}
        expected = {{"datasets": "builtin:digits", "models": "efficientnet_lite0", "strategies": "lp-ft"}}
        print(json.dumps({{"after_import": after_import, "after_help": after_help, "codes": codes,
                          "list": {{w: [r.exit_code, expected[w] in r.output] for w, r in listed.items()}},
                          "after_list": [m for m in heavy if m in sys.modules and m != "numpy"]}}))
    """, cli_env)
    assert out["after_import"] == [] and out["after_help"] == [], out
    assert out["codes"] == {"--help": 0, **{f"{c} --help": 0 for c in COMMANDS}}
    assert out["list"] == {w: [0, True] for w in ("datasets", "models", "strategies")}, out
    assert out["after_list"] == [], out  # models and strategies come from the torch-free catalog


def test_import_transferkit_is_light_and_keeps_the_fork_guard(cli_env: dict[str, str]):
    out = _python(f"""
        import json, sys
        import transferkit
        from transferkit.core import processes
        unlisted = sorted(set(transferkit.__all__) - set(dir(transferkit)))
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print(json.dumps({{"heavy": heavy, "guard": processes._installed, "all": sorted(transferkit.__all__),
                          "dir": unlisted, "submodule": transferkit.cli.__name__}}))
    """, cli_env)
    assert out["heavy"] == [] and out["guard"] is True, out
    assert out["submodule"] == "transferkit.cli"  # submodules load on attribute access, as transferkit.api
    assert out["dir"] == [] and "fit" in out["all"] and "TransferClassifier" in out["all"]


def test_the_public_api_loads_on_first_use():
    """The function `transferkit.evaluate` wins over the subpackage transferkit.evaluate, also after that subpackage's
    modules were imported (importing a submodule binds it on its parent); unknown names raise AttributeError."""
    import pytest

    import transferkit
    import transferkit.evaluate.metrics  # noqa: F401
    from transferkit import FitConfig, TransferClassifier, fit
    from transferkit.api import evaluate

    assert transferkit.evaluate is evaluate and fit.__module__ == "transferkit.api"
    assert (FitConfig.__module__, TransferClassifier.__module__) == ("transferkit.config", "transferkit.estimator")
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        transferkit.no_such_name  # noqa: B018


def test_console_script_and_python_m_list_the_commands_in_order(cli_env: dict[str, str]):
    for cmd in ([str(VENV_BIN / "transferkit"), "--help"], [sys.executable, "-m", "transferkit", "--help"],
                [sys.executable, "-m", "transferkit.cli", "--help"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env, cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        listed = re.findall(r"^│ (\w+) +\S", proc.stdout, flags=re.M)
        assert listed == COMMANDS, (cmd, proc.stdout)
