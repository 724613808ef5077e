"""Static checks over the source: the layer order of imports, and safe torch.load calls.

Layers, in order: core, data, backbones, tasks, strategies, train, evaluate, export, serve, then the top-level modules
(config, api, estimator, the cli package, __init__). A module may import from its own layer and earlier layers only.
Top-level config.py is stricter: it may import transferkit.core and transferkit.train only.
Every import statement counts, including ones inside functions and under ``if TYPE_CHECKING``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "transferkit"
LAYERS = ["core", "data", "backbones", "tasks", "strategies", "train", "evaluate", "export", "serve", "<top>"]
TOP = LAYERS.index("<top>")
TOP_PACKAGES = {"cli"}  # subpackages of the top level: they may import every layer, as api does
CONFIG_MAY_IMPORT = {"core", "train"}


def _modules() -> dict[str, Path]:
    """dotted module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES.get(module, Path()).name == "__init__.py"


def layer_of(module: str) -> str:
    """'transferkit.data.sources' -> 'data'; 'transferkit.api' / 'transferkit' -> '<top>'."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:
        return parts[1]
    return "<top>"


def _imported_modules(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute transferkit module) for every import of the package in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if _is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from transferkit import api` imports the submodule transferkit.api
            subs = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
            found += [(node.lineno, s) for s in subs] or [(node.lineno, target)]
    return [(line, name) for line, name in found if name == "transferkit" or name.startswith("transferkit.")]


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(PACKAGE.parent))
    except ValueError:
        return str(path)


def _violations(modules: dict[str, Path] | None = None) -> list[str]:
    problems = []
    for module, path in (modules or MODULES).items():
        own = layer_of(module)
        is_config = module == "transferkit.config"
        for line, target in _imported_modules(module, path):
            other = layer_of(target)
            rel = _rel(path)
            if is_config:
                if other not in CONFIG_MAY_IMPORT:
                    problems.append(f"{rel}:{line}: config may import only core and train, imports {target}")
            elif LAYERS.index(other) > LAYERS.index(own):
                problems.append(f"{rel}:{line}: layer '{own}' imports later layer '{other}' ({target})")
    return problems


def test_every_module_is_in_a_known_layer():
    assert "transferkit.core.errors" in MODULES and "transferkit.api" in MODULES
    for module in MODULES:
        parts = module.split(".")
        if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir():
            assert parts[1] in LAYERS or parts[1] in TOP_PACKAGES, (
                f"subpackage '{parts[1]}' is not in the layer list; add it to LAYERS (or TOP_PACKAGES)")


def test_layer_order():
    problems = _violations()
    assert not problems, "layering violations:\n" + "\n".join(problems)


@pytest.mark.parametrize("module,source,expected", [
    ("transferkit.core.bad", "from transferkit.data.examples import Examples", "layer 'core' imports later layer 'data'"),
    ("transferkit.data.bad", "from ..backbones import build_backbone", "layer 'data' imports later layer 'backbones'"),
    ("transferkit.train.bad", "import transferkit", "layer 'train' imports later layer '<top>'"),
    ("transferkit.serve.bad", "def f():\n    from transferkit import api", "layer 'serve' imports later layer '<top>'"),
])
def test_the_checker_catches_violations(module, source, expected, tmp_path):
    """The checker itself can fail: a planted bad import is reported."""
    path = tmp_path / "bad.py"
    path.write_text(source + "\n")
    problems = _violations({module: path})
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_checker_restricts_config(tmp_path):
    path = tmp_path / "config.py"
    path.write_text("from transferkit.train.config import TrainConfig\nfrom transferkit.data.labels import LabelMap\n")
    problems = _violations({"transferkit.config": path})
    assert len(problems) == 1 and "config may import only core and train" in problems[0], problems


def _torch_loads(tree: ast.AST) -> tuple[list[ast.Call], list[int]]:
    """Calls of torch.load / torch.serialization.load, and lines that import ``load`` from torch under another name."""
    calls, aliased = [], []
    names = {"torch"} | {alias.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
                         for alias in node.names if alias.name == "torch" and alias.asname}  # import torch as th
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            value = node.func.value
            if (isinstance(value, ast.Name) and value.id in names) or (
                    isinstance(value, ast.Attribute) and value.attr == "serialization"):
                calls.append(node)
        elif isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
            if any(alias.name == "load" for alias in node.names):
                aliased.append(node.lineno)
    return calls, aliased


def _unsafe_torch_loads(files: list[Path]) -> list[str]:
    unsafe = []
    for path in files:
        calls, aliased = _torch_loads(ast.parse(path.read_text(encoding="utf-8")))
        unsafe += [f"{_rel(path)}:{line}: imports torch's load directly (call torch.load(..., weights_only=True))"
                   for line in aliased]
        for call in calls:
            value = {k.arg: k.value for k in call.keywords}.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                unsafe.append(f"{_rel(path)}:{call.lineno}: torch.load without weights_only=True")
    return unsafe


def test_torch_load_always_uses_weights_only():
    """C3: every torch.load in the package and the benchmarks passes weights_only=True (no unsafe fallback)."""
    files = sorted(PACKAGE.rglob("*.py")) + sorted((PACKAGE.parent / "benchmarks").rglob("*.py"))
    assert any(p.parent.name == "benchmarks" for p in files), "the benchmarks folder was not scanned"
    n_calls = sum(len(_torch_loads(ast.parse(p.read_text(encoding="utf-8")))[0]) for p in files)
    assert n_calls >= 1, "expected the checkpoint loader in backbones/vision.py to be found"
    unsafe = _unsafe_torch_loads(files)
    assert not unsafe, "\n".join(unsafe)


def test_torch_load_checker_flags_unsafe_calls(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("import torch\n"
                    "a = torch.load('x.pt')\n"
                    "b = torch.load('x.pt', weights_only=False)\n"
                    "c = torch.load('x.pt', map_location='cpu', weights_only=True)\n"
                    "from torch import load\n"
                    "import torch as th\n"
                    "d = th.load('x.pt')\n")
    unsafe = _unsafe_torch_loads([path])
    assert sorted(int(u.split(":")[1]) for u in unsafe) == [2, 3, 5, 7], unsafe
