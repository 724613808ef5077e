"""`transferkit pretrain`: continued self-supervised pretraining of a backbone on unlabeled in-domain data.

A top-level module (imports data, backbones, train.checkpoint and pretrain_methods). It reads the inputs (labels,
if any, are ignored; only the training split of a source with train/val/test, so later evaluation stays unseen),
runs one objective (pretrain_methods: SimCLR, SimCSE, MLM) for a fixed number of steps with AdamW and a cosine
schedule, checkpoints every ``checkpoint_every`` steps (train.checkpoint: safetensors + JSON, RNG included, so
``resume`` continues exactly), and writes OUT/backbone.safetensors + OUT/pretrain.json, which ``fit --model OUT``
(or ``pretrained:OUT``) loads (backbones/adapted.py). The projection / MLM heads stay in the checkpoints.
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from transferkit.backbones import DEFAULT_FOR_MODALITY, build_backbone
from transferkit.backbones.adapted import MANIFEST, WEIGHTS
from transferkit.core.errors import ConfigError, DataError
from transferkit.core.io import atomic_write_json
from transferkit.core.runtime import default_device
from transferkit.core.seeding import seed_everything
from transferkit.data.doctor import DoctorConfig, diagnose_inputs
from transferkit.data.examples import Examples, a_modality
from transferkit.data.images import DEFAULT_MAX_PIXELS
from transferkit.data.sources import TextColumns, load_source
from transferkit.pretrain_methods import METHODS, Objective, build_objective, resolve_method
from transferkit.strategies import STRATEGIES
from transferkit.train.checkpoint import Checkpoint, latest_checkpoint, restore_rng, save_checkpoint, unfinished_run


@dataclass(frozen=True)
class PretrainConfig:
    model: str = "auto"          # a backbone name, timm:/hf: id; auto: efficientnet_lite0 / minilm by the data
    method: str = "auto"         # auto | simclr | simcse | mlm (pretrain_methods.METHODS)
    steps: int = 200
    batch_size: int = 32
    lr: float | None = None      # None: the method's default (METHODS)
    weight_decay: float = 0.01
    temperature: float | None = None
    projection_dim: int = 128
    mlm_probability: float = 0.15
    image_size: int | None = None
    max_length: int = 128
    span_words: int = 0          # simcse: each view a random span of N words of a longer text (0: the whole text)
    seed: int = 0
    checkpoint_every: int = 50
    text_column: str | None = None
    image_column: str | None = None
    max_pixels: int | None = None
    progress: bool = True
    out: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "projection_dim", "max_length", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"The '{name}' parameter of PretrainConfig must be an int >= 1. Got {value!r} instead.")
        if self.method != "auto" and self.method not in METHODS:
            valid = ", ".join(["auto", *METHODS])
            if self.method in STRATEGIES:
                raise ConfigError(f"--method {self.method} is a fit strategy, which trains on labels; pretrain learns "
                                  f"from unlabeled inputs with: {valid}. Run `transferkit fit --strategy "
                                  f"{self.method} --model OUT` after pretraining.")
            close = difflib.get_close_matches(self.method, list(METHODS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown pretrain method '{self.method}'.{hint} Valid methods: {valid}.")
        for name in ("lr", "temperature"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ConfigError(f"The '{name}' parameter of PretrainConfig must be a number > 0. Got {value!r} instead.")
        if not isinstance(self.span_words, int) or self.span_words < 0:
            raise ConfigError(f"The 'span_words' parameter of PretrainConfig must be an int >= 0. Got {self.span_words!r} "
                              "instead.")
        if self.span_words and self.method not in ("auto", "simcse"):
            raise ConfigError(f"--span-words picks the spans of --method simcse; drop it for --method {self.method}.")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError("The 'mlm_probability' parameter of PretrainConfig must be in (0, 1). "
                              f"Got {self.mlm_probability!r} instead.")

    @classmethod
    def from_options(cls, **options: Any) -> PretrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown option '{unknown[0]}'.{hint} Valid options: {', '.join(sorted(known))}.")
        return cls(**options)


@dataclass
class PretrainResult:
    out: Path
    manifest: dict[str, Any]
    losses: list[float] = field(default_factory=list)


def unlabeled_inputs(data: str | Path | Examples, cfg: PretrainConfig) -> Examples:
    """The training split's inputs (labels dropped), checked by the data doctor: unreadable inputs left out."""
    if isinstance(data, Examples):
        examples = data
    else:
        examples = load_source(data, TextColumns(cfg.text_column or "text", image=cfg.image_column), labeled=False).train
    examples = replace(examples, labels=None, raw_labels=None)  # labels, if any, play no part
    if examples.modality not in ("image", "text") or examples.is_tokens:
        raise DataError(f"{examples.source}: pretrain reads images or one text per row; this is "
                        f"{'tagged sentences' if examples.is_tokens else examples.modality} data.")
    report = diagnose_inputs({"unlabeled": examples}, DoctorConfig(max_pixels=cfg.max_pixels or DEFAULT_MAX_PIXELS))
    report.raise_if_fatal()
    left_out = set(report.left_out("unlabeled"))
    kept = examples.subset([i for i in range(len(examples)) if i not in left_out])
    kept.max_pixels = report.config.max_pixels
    if len(kept) < 2:
        raise DataError(f"{examples.source}: pretrain needs at least 2 usable inputs (contrastive objectives compare "
                        f"inputs with each other); found {len(kept)}.")
    return kept


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Step ``step``'s inputs: a shuffle per pass that depends only on (seed, pass), so resume replays them."""
    per_pass = max(1, n // batch_size)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + step // per_pass)).tolist()
    start = (step % per_pass) * batch_size
    return order[start:start + batch_size]


def pretrain(data: str | Path | Examples | None = None, config: PretrainConfig | None = None,
             resume: str | Path | None = None, **options: Any) -> PretrainResult:
    """Adapt a backbone to unlabeled ``data``; returns the OUT folder that ``fit(model=OUT)`` takes.

    ``resume=OUT`` continues a stopped run from its newest checkpoint with the settings in OUT/config.json.
    """
    if resume is not None:
        if config is not None or options:
            raise ConfigError(f"resume continues with the settings in {Path(resume) / 'config.json'}; drop "
                              f"{', '.join(sorted(options)) or 'config'}.")
        data, cfg = _resume_inputs(Path(resume), data)
    else:
        cfg = config or PretrainConfig.from_options(**options)
        if data is None:
            raise ConfigError("pretrain needs data: an image folder, a .csv/.jsonl of texts or builtin:NAME.")
    seed_everything(cfg.seed)
    examples = unlabeled_inputs(data, cfg)
    model_name = DEFAULT_FOR_MODALITY[examples.modality] if cfg.model == "auto" else cfg.model
    backbone = build_backbone(model_name)
    if backbone.modality != examples.modality:
        raise ConfigError(f"Model '{model_name}' is {a_modality(backbone.modality)} model but {examples.source} holds "
                          f"{examples.modality} data; use e.g. --model {DEFAULT_FOR_MODALITY[examples.modality]}.")
    if examples.modality == "image":
        backbone.preprocessing = backbone.preprocessing.with_image_size(cfg.image_size)
    method = resolve_method(cfg.method, backbone)
    objective = build_objective(method, backbone, cfg.temperature, cfg.projection_dim, cfg.mlm_probability,
                                cfg.max_length, examples.max_pixels, cfg.span_words)
    out = Path(resume) if resume is not None else Path(cfg.out or f"runs/pretrain-{datetime.now():%Y%m%d-%H%M%S}")
    fingerprint = examples.fingerprint()
    if resume is None:
        _claim(out)
        atomic_write_json(out / "config.json", {"data": _reference(data), "data_fingerprint": fingerprint,
                                                "n_inputs": len(examples), **asdict(cfg)})
    else:
        _refuse_changed(out, fingerprint)
    losses = _run(objective, backbone, examples, cfg, method, out)
    manifest = _write_backbone(out, backbone, cfg, method, model_name, data, examples, fingerprint, losses)
    return PretrainResult(out, manifest, losses)


def _run(objective: Objective, backbone, examples: Examples, cfg: PretrainConfig, method: str,
         out: Path) -> list[float]:
    """The loop: fixed steps, AdamW, linear warmup (5 %) then cosine to 0, gradient clipping at 1."""
    device = default_device()
    backbone.to(device)
    objective.helpers.to(device)
    params = list({id(p): p for m in (backbone, objective.helpers) for p in m.parameters()}.values())
    lr = cfg.lr if cfg.lr is not None else METHODS[method][1]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    ckpt = latest_checkpoint(out / "checkpoints")
    if ckpt is not None:
        backbone.load_state_dict(ckpt.model)
        objective.helpers.load_state_dict(ckpt.helpers or {})
        optimizer.load_state_dict(ckpt.optimizer)
        losses = list(ckpt.state["losses"])
        restore_rng(ckpt.state["rng_tensors"], ckpt.state["rng"])
    warmup = max(1, round(0.05 * cfg.steps))
    backbone.train()
    objective.helpers.train()
    bar = tqdm(range(len(losses), cfg.steps), initial=len(losses), total=cfg.steps, desc=f"pretrain {method}",
               leave=False, disable=not cfg.progress or None)
    for step in bar:
        factor = (step + 1) / warmup if step < warmup else \
            0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        inputs = [examples.inputs[i] for i in batch_indices(step, len(examples), cfg.batch_size, cfg.seed)]
        loss = objective.loss(inputs, device)
        if not torch.isfinite(loss):
            raise DataError(f"pretrain {method}: the loss became {loss.item()} at step {step + 1}; lower --lr "
                            f"(was {lr:g}) or raise --temperature.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.item()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            state = {"losses": losses, "loop": {"step": step + 1, "finished": step + 1 == cfg.steps}}
            save_checkpoint(out / "checkpoints", step + 1, Checkpoint(
                model=backbone.state_dict(), best_model={}, optimizer=optimizer.state_dict(), state=state,
                helpers=objective.helpers.state_dict()))
    bar.close()
    backbone.eval()
    return losses


def _write_backbone(out: Path, backbone, cfg: PretrainConfig, method: str, model_name: str, data: Any,
                    examples: Examples, fingerprint: str, losses: list[float]) -> dict[str, Any]:
    from transferkit.run_record import versions

    tail = losses[-max(1, min(10, len(losses) // 10)):]
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS))
    manifest = {
        "format": "transferkit-pretrain/1", "base_model": model_name, "modality": examples.modality,
        "method": method, "data": _reference(data), "data_fingerprint": fingerprint, "n_inputs": len(examples),
        "steps": len(losses), "first_loss": losses[0], "final_loss": sum(tail) / len(tail),
        "image_size": backbone.preprocessing.image_size if examples.modality == "image" else None,
        "config": asdict(cfg), "versions": versions(), "created": datetime.now().isoformat(timespec="seconds"),
    }
    atomic_write_json(out / "history.json", [{"step": i + 1, "loss": v} for i, v in enumerate(losses)])
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _reference(data: Any) -> str | None:
    return None if data is None or isinstance(data, Examples) else str(data)


def _claim(out: Path) -> None:
    if (out / MANIFEST).is_file():
        raise ConfigError(f"{out} already holds a pretrained backbone; choose another --out (or delete it).")
    if unfinished_run(out / "checkpoints"):
        raise ConfigError(f"{out} holds an unfinished pretrain run; continue it with `transferkit pretrain --resume "
                          f"{out}` or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)


def _resume_inputs(out: Path, data: Any) -> tuple[Any, PretrainConfig]:
    config_file = out / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"--resume {out}: no config.json there; pass the --out folder of a pretrain run.")
    if (out / MANIFEST).is_file():
        raise ConfigError(f"--resume {out}: that run already finished ({out / MANIFEST}); pass it to "
                          f"`transferkit fit --model {out}`.")
    recorded = json.loads(config_file.read_text(encoding="utf-8"))
    data = data if data is not None else recorded.get("data")
    if data is None:
        raise ConfigError(f"--resume {out}: the run was started on in-memory data; pass the same data again.")
    own = {f.name for f in fields(PretrainConfig)}
    return data, PretrainConfig(**{k: v for k, v in recorded.items() if k in own})


def _refuse_changed(out: Path, fingerprint: str) -> None:
    recorded = json.loads((out / "config.json").read_text(encoding="utf-8")).get("data_fingerprint")
    if recorded and recorded != fingerprint:
        raise DataError(f"--resume {out}: the data differs from the data this run started on (fingerprint "
                        f"{recorded[:12]}… recorded in {out / 'config.json'}, {fingerprint[:12]}… now); resume "
                        "with the same data or start a new run.")
