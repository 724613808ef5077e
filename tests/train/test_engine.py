"""The training engine: two CPU processes (gloo) train like one with the same global batch, resume across process
counts, fail fast when a rank dies; and under DDP unfreezing stages pause parameters instead of freezing them.

Multi-process runs go through `transferkit fit --processes 2` (accelerate's launcher). Data: 3 BBC topics x 8
training texts through MiniLM, head strategy (frozen backbone in eval mode: no dropout, so the only difference
between the runs is the order of floating-point sums), a global batch of 8 (3 optimizer steps an epoch).
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import VENV_BIN, bbc_texts, write_digit_folder, write_text_csv
from transferkit import api
from transferkit.cli.launch import without_processes_flag
from transferkit.core.errors import ConfigError
from transferkit.strategies import build_strategy
from transferkit.train.checkpoint import complete_checkpoints
from transferkit.train.engine import Engine
from transferkit.train.loop import _optimizer_step, _per_process_loader

EXE = str(VENV_BIN / "transferkit")
# Losses and weights, 2 processes vs 1, with SGD in fp32: only the order of float sums differs. (bf16 autocast on
# batches of 4 vs 8 padded texts: weights 2e-4 apart, 0.2 % of their norm; AdamW: the losses agree as closely,
# but a weight whose gradient is ~0 moves by +-lr on the sign of that noise.)
TOLERANCE = 1e-4
FIT = ["--model", "minilm", "--strategy", "head", "--seed", "0", "--patience", "0", "--optimizer", "sgd", "--lr", "0.1",
       "--precision", "fp32"]


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("engine-texts")
    train = write_text_csv(root / "train.csv", *bbc_texts(per_class=8))
    val = write_text_csv(root / "val.csv", *bbc_texts(per_class=2, offset=8))
    return train, val


@pytest.fixture(scope="module")
def two_processes(texts: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, cli_env: dict) -> Path:
    """A 2-process run, batch 4 per process (global 8); its two checkpoints: epoch 1 and 2."""
    out = tmp_path_factory.mktemp("two") / "run"
    proc = subprocess.run([EXE, "fit", "--data", str(texts[0]), "--val-data", str(texts[1]), *FIT, "--epochs", "2",
                           "--batch-size",
                           "4", "--processes", "2", "--out", str(out)],
                          env=cli_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = "4 per process x 2 processes = global batch 8"
    assert f"batch: {line}" in proc.stderr  # the CLI's console is stderr; torchrun passes rank 0's through
    assert f"| batch_size | {line} |" in (out / "report.md").read_text()
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "bundle" / "model.safetensors"))


def _assert_close_runs(a: Path, b: Path) -> None:
    ha, hb = (json.loads((r / "history.json").read_text()) for r in (a, b))
    assert len(ha) == len(hb)
    for ra, rb in zip(ha, hb):
        for key in ("train_loss", "val_loss"):
            if ra[key] is not None:
                assert abs(ra[key] - rb[key]) < TOLERANCE, (key, ra, rb)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst < TOLERANCE, f"weights differ by up to {worst}"
    moved = float((wa["head.linear.weight"]).abs().max())
    assert moved > 100 * TOLERANCE  # the head trained: the comparison is not between two untouched models


def test_two_processes_match_one_process_with_the_same_global_batch(two_processes: Path, texts, tmp_path: Path):
    one = api.fit(str(texts[0]), val_data=str(texts[1]), model="minilm", strategy="head", epochs=2, seed=0,
                  patience=0, optimizer="sgd", lr=0.1, precision="fp32", batch_size=8, progress=False,
                  out=str(tmp_path / "one"))
    _assert_close_runs(one.run_dir, two_processes)
    metrics = json.loads((two_processes / "metrics.json").read_text())
    assert (metrics["processes"], metrics["batch_size_used"], metrics["global_batch"]) == (2, 4, 8)
    state = json.loads((complete_checkpoints(two_processes / "checkpoints")[-1] / "state.json").read_text())["loop"]
    assert state["step"] == 6 and state["global_batch"] == 8  # 24 examples / 8 a step x 2 epochs: shards, not copies


def test_resume_with_another_number_of_processes(two_processes: Path, tmp_path: Path):
    """Stopped after epoch 1 (step 3) in 2 processes, continued in 1: batches of the recorded global batch (8)."""
    run = tmp_path / "resumed"
    shutil.copytree(two_processes, run, ignore=shutil.ignore_patterns("checkpoints", "bundle", "metrics.json",
                                                                      "history.json", "report.md"))
    epoch_one = next(c for c in complete_checkpoints(two_processes / "checkpoints")
                     if json.loads((c / "state.json").read_text())["loop"]["step"] == 3)
    shutil.copytree(epoch_one, run / "checkpoints" / epoch_one.name)
    result = api.fit(resume=str(run))
    _assert_close_runs(two_processes, result.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["processes"], metrics["batch_size_used"], metrics["global_batch"]) == (1, 8, 8)


def test_a_killed_rank_fails_the_job_with_a_message(texts, tmp_path: Path, cli_env: dict):
    out = tmp_path / "killed"
    proc = subprocess.Popen([EXE, "fit", "--data", str(texts[0]), "--val-data", str(texts[1]), *FIT,
                             "--epochs", "200", "--batch-size", "4", "--checkpoint-steps", "1", "--processes", "2",
                             "--out", str(out)], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not complete_checkpoints(out / "checkpoints") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        rank1 = [p for p in psutil.Process(proc.pid).children(recursive=True)
                 if p.environ().get("RANK") == "1" and "transferkit" in " ".join(p.cmdline())]
        assert rank1, "rank 1 not found"
        rank1[0].send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)  # no hang: the agent stops rank 0 too
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "rank 1 was killed by SIGKILL, so the other ranks were stopped too" in stderr
    assert "--resume" in stderr


def test_gradual_unfreezing_in_two_processes_matches_one_process(tmp_path: Path, cli_env: dict):
    """gradual, one stage an epoch, on EfficientNet-Lite0 (no dropout; batch norm frozen by the finetune family's
    policy, no augmentation: every example's forward pass is the same in either run): epoch 1 trains the head,
    epoch 2 also the last block group, epoch 3 the one before too. Under DDP the blocks stay requires_grad=True
    and are paused until their stage; had requires_grad changed mid-run, DDP (which fixes the parameters it
    all-reduces when it wraps the model) would not average the unfrozen blocks' gradients and rank 0 would have
    trained them on its shard alone, far from the 1-process weights. Blocks whose stage never came are unchanged."""
    from transferkit.backbones import build_backbone

    train = write_digit_folder(tmp_path / "train", (0, 1, 2), 8)
    val = write_digit_folder(tmp_path / "val", (0, 1, 2), 2, offset=8)
    options = ["--model", "efficientnet_lite0", "--image-size", "32", "--augment", "none", "--strategy", "gradual",
               "--epochs", "3", "--seed", "0", "--patience", "0", "--optimizer", "sgd", "--lr", "0.1",
               "--precision", "fp32"]
    two = tmp_path / "two"
    proc = subprocess.run([EXE, "fit", "--data", str(train), "--val-data", str(val), *options, "--batch-size", "4",
                           "--processes", "2", "--out", str(two)], env=cli_env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = api.fit(str(train), val_data=str(val), model="efficientnet_lite0", image_size=32, augment="none",
                  strategy="gradual", epochs=3, seed=0, patience=0, optimizer="sgd", lr=0.1, precision="fp32",
                  batch_size=8, progress=False, out=str(tmp_path / "one"))
    _assert_close_runs(one.run_dir, two)
    assert json.loads((two / "metrics.json").read_text())["global_batch"] == 8

    pretrained = {f"backbone.{k}": v for k, v in build_backbone("efficientnet_lite0").state_dict().items()}
    trained = _weights(two)

    def moved(prefix: str) -> float:
        return max(float((trained[k] - pretrained[k]).abs().max()) for k in pretrained if k.startswith(prefix))

    # moved by ~9e-3 and ~3e-3 here, while the two runs agree within 2e-7
    assert moved("backbone.model.conv_head.") > 10 * TOLERANCE  # stage 1 (epochs 2-3): the last block group
    assert moved("backbone.model.blocks.6.") > 10 * TOLERANCE  # stage 2 (epoch 3): the one before
    assert moved("backbone.model.blocks.5.") == 0.0 and moved("backbone.model.conv_stem.") == 0.0  # never reached


@pytest.mark.parametrize(("command", "instead"), [
    (["tune", "--strategy", "head", "--trials", "2"], "--storage"),
    (["compare", "--strategies", "head,finetune"], "--workers N"),
])
def test_tune_and_compare_refuse_a_multi_process_launch(command, instead, texts, tmp_path: Path, cli_env: dict):
    """Under `accelerate launch --num_processes 2` each rank would run every trial or cell (N copies racing on one
    folder): both stop at once with a message naming the way they scale out; fit is the command that launches."""
    out = tmp_path / "out"
    proc = subprocess.run([str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", "0", "--num_cpu_threads_per_process", "1", "-m", "transferkit",
                           *command, "--data", str(texts[0]), "--model", "minilm", "--out", str(out)],
                          env={**cli_env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    message = f"transferkit {command[0]} does not run inside a multi-process launch"
    assert proc.stderr.count(message) == 2, proc.stderr[-3000:]  # one line from each rank
    assert instead in proc.stderr and "WORLD_SIZE=2" in proc.stderr
    assert not out.exists()  # refused before any trial, cell or folder


# ------------------------------------------------------------------------------- in process, no second rank needed


class _Ranks(Engine):
    def __init__(self, n: int) -> None:
        self.num_processes = n


def test_resume_refuses_a_process_count_that_cannot_split_the_global_batch(texts):
    from torch.utils.data import DataLoader

    loader = DataLoader(list(range(24)), batch_size=4)

    class Ckpt:
        path, state = Path("runs/x/checkpoints/ckpt-000003"), {"loop": {"global_batch": 8}}

    assert _per_process_loader(loader, Ckpt(), _Ranks(2)) is loader
    assert _per_process_loader(loader, Ckpt(), _Ranks(1)).batch_size == 8
    assert _per_process_loader(loader, Ckpt(), _Ranks(4)).batch_size == 2
    with pytest.raises(ConfigError, match=r"global batch of 8, which 3 processes cannot share evenly; resume it "
                                          r"with one of \[1, 2, 4, 8\] processes"):
        _per_process_loader(loader, Ckpt(), _Ranks(3))


def test_under_ddp_stages_pause_parameters_instead_of_changing_requires_grad(tmp_path: Path):
    """finetune --warmup-head-epochs 1: epoch 0 trains the head alone. In one process the backbone is frozen
    (requires_grad False); under DDP it keeps requires_grad (DDP's reducer is built once) but is paused: eval
    mode, and the optimizer step leaves it and its optimizer state untouched, as if frozen; epoch 1 trains it."""
    from transferkit.backbones import build_backbone
    from transferkit.tasks import get_task
    from transferkit.tasks.model import TransferModel
    from transferkit.train.config import TrainConfig
    from transferkit.train.optim import build_optimizer, warmup_cosine

    backbone = build_backbone("minilm")
    model = TransferModel(backbone, get_task("classification").head(backbone.feature_dim, 3))
    local = build_strategy("finetune", {"warmup_head_epochs": 1})
    local.on_epoch_start(model, 0)
    assert not any(p.requires_grad for p in backbone.parameters())

    ddp = build_strategy("finetune", {"warmup_head_epochs": 1})
    ddp.pause_instead_of_freeze = True
    ddp.on_epoch_start(model, 0)
    assert all(p.requires_grad for p in model.parameters()) and ddp.paused
    ddp.train_mode(model)
    assert not backbone.training and model.head.training
    optimizer = build_optimizer(ddp.param_groups(model, 1e-3, 0.05), TrainConfig())
    scheduler = warmup_cosine(optimizer, 10, 0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = {"text": ["a short text", "another one"], "labels": torch.tensor([0, 2])}
    batch = {**backbone_inputs(backbone, batch["text"]), "labels": batch["labels"]}
    ddp.training_step(model, batch, ddp_ctx()).backward()
    _optimizer_step(optimizer, scheduler, 1.0, ddp.paused)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("head.") for n in changed)
    assert all(id(p) not in ddp.paused for p in optimizer.state)  # no moments for paused parameters

    ddp.on_epoch_start(model, 1)  # the backbone's stage: nothing paused, requires_grad never changed
    assert not ddp.paused and all(p.requires_grad for p in model.parameters())
    ddp.train_mode(model)
    assert backbone.training


def backbone_inputs(backbone, texts: list[str]) -> dict:
    from transferkit.data.loaders import TextCollator

    batch = TextCollator(backbone.preprocessing)([{"text": t, "index": i} for i, t in enumerate(texts)])
    return {k: v for k, v in batch.items() if k != "labels"}


def ddp_ctx():
    from transferkit.strategies.base import StrategyContext

    return StrategyContext(n_classes=3, seed=0)


def test_processes_flag_is_removed_from_the_relaunched_command():
    argv = ["fit", "--data", "x.csv", "--processes", "2", "--epochs", "1", "--processes=2"]
    assert without_processes_flag(argv) == ["fit", "--data", "x.csv", "--epochs", "1"]
