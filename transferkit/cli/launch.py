"""``transferkit fit --processes N``: the same command in N processes, started by accelerate's launcher (DDP).

Imports transferkit.core only at start (torch and accelerate inside launch_fit). It is ``accelerate launch --multi_gpu
--num_processes N -m transferkit fit ...`` without the flag: on a machine without GPUs accelerate's workers
use the gloo backend on CPU (train.engine.AccelerateEngine asks for it), with GPUs NCCL, one GPU per process
(with fewer GPUs than processes, CPU processes, said so).
Each process gets (idle cores at start) // N torch threads unless OMP_NUM_THREADS is set. When a process fails or is killed,
torch's elastic agent stops the others (SIGTERM, then SIGKILL after a grace period), and this says which rank
failed first and how, in one line, instead of the agent's traceback; exit code 2 when that rank reported a user
mistake (its own one-line message is above), else 1.
"""
from __future__ import annotations

import os
import signal
import sys

from transferkit.core.errors import ConfigError


def without_processes_flag(argv: list[str]) -> list[str]:
    """``argv`` minus ``--processes N`` / ``--processes=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return out


def threads_per_process(processes: int) -> int:
    """OMP_NUM_THREADS when set (the user's choice), else this process's share of the cores (the idle ones:
    transferkit.cli.cores) // processes (at least 1)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    from transferkit.cli import cores

    return max(1, (cores.claim()[0] or os.cpu_count() or 1) // processes)


def launch_fit(processes: int, argv: list[str]) -> int:
    """Run ``transferkit <argv>`` (a fit command, without --processes) in ``processes`` ranks; the exit code."""
    if processes < 2:
        raise ConfigError(f"--processes must be an int >= 2 to launch; got {processes}.")
    import torch
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if torch.cuda.is_available() and torch.cuda.device_count() < processes:  # fewer GPUs: CPU processes, said so
        print(f"note: {processes} processes but {torch.cuda.device_count()} GPU(s): training on CPU (gloo); use "
              f"--processes {torch.cuda.device_count()} for the GPUs.", file=sys.stderr)
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # inherited by the launched processes
    args = launch_command_parser().parse_args(
        ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", "0", "--num_cpu_threads_per_process",
         str(threads_per_process(processes)), "--module", "transferkit", *argv])
    try:
        launch_command(args)
    except ChildFailedError as exc:
        return _report_failure(exc, processes)
    except SignalException as exc:  # SIGTERM/SIGINT here: the agent passed it on, each rank checkpointed
        print(f"Error: transferkit fit --processes {processes} stopped by {exc.sigval.name}; continue with "
              f"`transferkit fit --resume RUN_DIR --processes N`.", file=sys.stderr)
        return 128 + int(exc.sigval)
    return 0


def _report_failure(exc: object, processes: int) -> int:
    """One line: the first rank that failed and how; 2 when it reported a user mistake (exit 2), else 1."""
    _, first = exc.get_first_failure()
    code = first.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    print(f"Error: transferkit fit --processes {processes} stopped: rank {first.local_rank} {how}, so the other "
          f"ranks were stopped too (messages above). A run folder keeps its last complete checkpoint: continue it "
          f"with `transferkit fit --resume RUN_DIR --processes N` (any N that divides the global batch).",
          file=sys.stderr)
    return 2 if code == 2 else 1
