"""THE training loop. Every method trains through :func:`fit`; none forks it.

Per epoch: ``method.on_epoch_start`` -> sampler from the method (train rule) -> for each batch
``training_step`` -> backward -> SGD step; then evaluation of val and test every
``train.eval_every`` epochs (and at the last), a report callback and a resumable checkpoint.
The whole official test set (``fulltest``) is evaluated once, with the last epoch.
:func:`encode_splits` is the same evaluation pass for pooled features (a stage's per-base
product, cached by the orchestrator).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lt_ray.checkpoint import load_resumable, save_checkpoint
from lt_ray.config import PRECISIONS as PRECISION_NAMES
from lt_ray.config import ExperimentConfig, TrainConfig
from lt_ray.data import DeviceLoader, LTData
from lt_ray.errors import ConfigError, TrainingDiverged
from lt_ray.methods.base import Method
from lt_ray.metrics import split_metrics
from lt_ray.schedules import lr_factor

log = logging.getLogger(__name__)

#: ``report(epoch_record, checkpoint_path_or_None, per_class_recall)`` after every evaluated
#: epoch; ``per_class_recall`` maps each evaluated split to its recall vector.
Reporter = Callable[[dict[str, Any], Path | None, dict[str, list[float]]], None]
PRECISIONS = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16), strict=True))
SPLITS = ("train", "val", "test", "fulltest")
EVAL_PREFIXES = ("val_", "test_", "fulltest_")
NAN_CHECK_EVERY = 20  # steps between finiteness checks of the running loss (avoids GPU syncs)
#: ``train.compile=auto`` compiles the training step of a run with at least this many steps on
#: this device type. CPU (2 cores, bf16 ResNet-32, batch 128; README "Measured results"): the
#: compiled step is 1.19x faster and compiling costs ~50 s, repaid after ~2,800 steps; twice
#: that covers one recompile (the DRW switch) too. A 200-epoch CIFAR-10-LT run is 19,400 steps.
#: A device type without an entry (CUDA, until the GPU check measures it) stays eager.
COMPILE_AUTO_MIN_STEPS: dict[str, int] = {"cpu": 6000}


@dataclass
class FitResult:
    metrics: dict[str, Any]  # final flat {split}_{metric}, train_loss, wall time, ...
    per_class: dict[str, list[float]]  # split -> per-class recall
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device={name!r} is not a device (auto, cpu, cuda, cuda:N)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available; use auto or cpu")
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = fp32). ``auto`` picks bf16 where the hardware runs it natively."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if torch.cpu._is_avx512_bf16_supported() else None
    if name not in PRECISIONS:
        raise ConfigError(f"train.precision={name!r} is unknown (auto, fp32, bf16, fp16)")
    return PRECISIONS[name]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def split_logits(
    method: Method, name: str, data: LTData, train: TrainConfig,
    device: torch.device, dtype: torch.dtype | None,
) -> dict[str | None, torch.Tensor]:
    """The logits of split ``name``, in large batches: ``{None: primary}`` plus one entry per
    named output of ``method.predict``."""
    split = getattr(data, name)
    loader = DeviceLoader(
        split, batch_size=train.eval_batch_size, mean=data.mean, std=data.std, train=False,
        channels_last=train.channels_last, images=method.needs_images,
    )
    parts: dict[str | None, list[torch.Tensor]] = {}
    method.reset_eval_stats()
    with autocast(device, dtype):
        for batch in loader:
            out = method.predict(batch.x, split=name, index=batch.index)
            named = out if isinstance(out, dict) else {None: out}
            if isinstance(out, dict):
                named = {**out, None: out[method.primary_output]}
            for key, logits in named.items():
                parts.setdefault(key, []).append(logits)
    if not parts:
        return {None: torch.empty(0, 0)}
    return {key: torch.cat(chunks) for key, chunks in parts.items()}


def predict_split(
    method: Method, name: str, data: LTData, train: TrainConfig,
    device: torch.device, dtype: torch.dtype | None,
) -> dict[str | None, torch.Tensor]:
    """Argmax predictions over split ``name`` (see :func:`split_logits`)."""
    logits = split_logits(method, name, data, train, device, dtype)
    return {key: values.argmax(dim=1) if values.numel() else
            torch.empty(0, dtype=torch.int64) for key, values in logits.items()}


def evaluate_split(
    method: Method, name: str, data: LTData, train: TrainConfig,
    device: torch.device, dtype: torch.dtype | None,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Flat metrics and per-class recall of one split (see :func:`evaluate`), plus the method's
    :meth:`~lt_ray.methods.base.Method.eval_stats` as ``{split}_{name}``."""
    flat: dict[str, float] = {}
    per_class: dict[str, list[float]] = {}
    targets = getattr(data, name).y
    for output, preds in predict_split(method, name, data, train, device, dtype).items():
        values, recall = split_metrics(name, preds, targets, data.class_counts, output)
        flat.update(values)
        per_class[name if output is None else f"{name}/{output}"] = recall.tolist()
    flat.update({f"{name}_{key}": float(value) for key, value in method.eval_stats().items()})
    return flat, per_class


def evaluate(
    method: Method, data: LTData, splits: tuple[str, ...], train: TrainConfig,
    device: torch.device, dtype: torch.dtype | None,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Flat metrics and per-class recall of ``splits``: ``{split}_{metric}`` and recall under
    ``split`` for the primary output; ``{split}_{metric}_{output}`` and ``split/output`` for
    each named output."""
    was_training = method.training
    method.eval()
    flat: dict[str, float] = {}
    per_class: dict[str, list[float]] = {}
    for name in splits:
        values, recall = evaluate_split(method, name, data, train, device, dtype)
        flat.update(values)
        per_class.update(recall)
    method.train(was_training)
    return flat, per_class


def eval_precision(train: TrainConfig) -> str:
    """The precision name evaluations (and cached features) use: fp32, or the training one."""
    return "fp32" if train.eval_precision == "fp32" else train.precision


def eval_dtype(train: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype evaluations use on ``device`` (None: fp32)."""
    return resolve_precision(eval_precision(train), device)


@torch.no_grad()
def encode_splits(method: Method, data: LTData, train: TrainConfig,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """Pooled features [N, D] (fp32, on the CPU) of every split of ``data``, un-augmented, as
    the engine evaluates: eval mode, ``train``'s evaluation precision and memory format."""
    name = eval_precision(train)
    dtype = None if name == "fp32" else resolve_precision(name, device)
    memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
    method.to(device=device, memory_format=memory_format).eval()
    out = {}
    with autocast(device, dtype):
        for split_name in SPLITS:
            split = getattr(data, split_name).to(device)
            loader = DeviceLoader(split, batch_size=train.eval_batch_size, mean=data.mean,
                                  std=data.std, train=False, channels_last=train.channels_last)
            out[split_name] = torch.cat([method.encode(b.x).float().cpu() for b in loader])
    return out


def compiles(method: Method, train: TrainConfig, device: torch.device, steps: int) -> bool:
    """Whether ``train.compile`` compiles this run's training step (``steps``: those it will
    take): ``on`` always, ``off`` never, ``auto`` for a method that compiles cleanly
    (``Method.compilable``) on a run long enough to repay it (:data:`COMPILE_AUTO_MIN_STEPS`)."""
    if train.compile != "auto":
        return train.compile == "on"
    threshold = COMPILE_AUTO_MIN_STEPS.get(device.type)
    return method.compilable and threshold is not None and steps >= threshold


def compiled_step(method: Method, *, fallback: bool) -> Callable[[Any], Any]:
    """``method.training_step`` through ``torch.compile`` (fixed shapes: the last, smaller batch
    of an epoch gets its own graph). With ``fallback`` (``train.compile=auto``) a step whose
    compilation fails runs eagerly, and so does the rest of the run, with one warning."""
    step = torch.compile(method.training_step, dynamic=False)
    log.info("training step compiled with torch.compile")
    if not fallback:
        return step
    eager = False

    def run_step(batch: Any) -> Any:
        nonlocal eager
        if eager:
            return method.training_step(batch)
        try:
            return step(batch)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: go on eagerly
            log.warning("torch.compile failed (%s: %s); training eagerly (train.compile=auto)",
                        type(exc).__name__, (str(exc).splitlines() or [""])[0])
            eager = True
            return method.training_step(batch)

    return run_step


def build_optimizer(method: Method, cfg: ExperimentConfig) -> torch.optim.SGD:
    groups = method.param_groups()
    for group in groups:
        group["lr_scale"] = group.get("lr_scale", 1.0)
        group["lr"] = cfg.optim.lr * group["lr_scale"]
    return torch.optim.SGD(
        groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov,
    )


def fit(
    method: Method,
    data: LTData,
    cfg: ExperimentConfig,
    *,
    report: Reporter | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = False,
) -> FitResult:
    """Train ``method`` on ``data`` for ``cfg.train.epochs`` and return last-epoch metrics.

    With ``checkpoint_path`` a resumable checkpoint is written atomically every
    ``train.checkpoint_every`` epochs and at the end; ``resume=True`` continues from it.
    """
    train = cfg.train
    device = method.ctx.device
    dtype = resolve_precision(train.precision, device)
    evaluation_dtype = eval_dtype(train, device)
    memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
    method.to(device=device, memory_format=memory_format)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image sizes: pick the fastest kernels
    data = data.to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    loader = DeviceLoader(
        data.train, batch_size=train.batch_size, mean=data.mean, std=data.std, train=True,
        sampler=train.sampler, class_counts=data.class_counts, crop_padding=train.crop_padding,
        flip=train.flip, cutout=train.cutout, channels_last=train.channels_last,
        generator=generator, images=method.needs_images, raw=method.raw_images,
        drop_last=method.drop_last,
    )
    optimizer = build_optimizer(method, cfg) if method.trainable else None
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and checkpoint_path is not None and checkpoint_path.is_file():
        state = load_resumable(checkpoint_path)
        method.load_state_dict(state["state_dict"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["generator"].to(generator.get_state().device))
        torch.set_rng_state(state["torch_rng"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        log.info("resumed from %s at epoch %d", checkpoint_path, start_epoch)

    def save(epoch: int) -> Path | None:
        if checkpoint_path is None:
            return None
        save_checkpoint(
            checkpoint_path, config=cfg.to_dict(), class_counts=data.class_counts.tolist(),
            state_dict=method.state_dict(), class_names=list(data.class_names), epoch=epoch,
            optimizer=optimizer.state_dict() if optimizer else {}, scaler=scaler.state_dict(),
            generator=generator.get_state(), torch_rng=torch.get_rng_state(), history=history,
        )
        return checkpoint_path

    epochs = train.epochs if method.trainable else 0  # nothing to train: evaluate only
    compiled = epochs > start_epoch and compiles(method, train, device,
                                                 (epochs - start_epoch) * len(loader))
    train_step = compiled_step(method, fallback=train.compile == "auto") if compiled \
        else method.training_step
    start_time = time.perf_counter()
    last_eval: dict[str, float] = {}
    last_per_class: dict[str, list[float]] = {}
    for epoch in range(start_epoch, epochs):
        epoch_start = time.perf_counter()
        method.set_mode(epoch)
        method.on_epoch_start(epoch, epochs)
        choice = method.sampler()
        loader.set_sampler(*(choice or (train.sampler, {})))
        factor = lr_factor(epoch, epochs, cfg.optim)
        for group in optimizer.param_groups:
            group["lr"] = cfg.optim.lr * factor * group["lr_scale"]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        for step, batch in enumerate(loader):
            with autocast(device, dtype):
                out = train_step(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += out.loss.detach().float() * len(batch.y)
            correct += (out.logits.detach().argmax(1) == batch.y).sum()
            seen += len(batch.y)
            if step % NAN_CHECK_EVERY == 0 and not bool(torch.isfinite(loss_sum)):
                _diverged(epoch, step, cfg)
        if not bool(torch.isfinite(loss_sum)):
            _diverged(epoch, len(loader) - 1, cfg)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "learning_rate": cfg.optim.lr * factor,
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_acc": float(correct) / max(seen, 1),
            "train_images_per_s": seen / (time.perf_counter() - epoch_start),
        }
        last = epoch == epochs - 1
        evaluated = last or (epoch + 1) % train.eval_every == 0
        if evaluated:
            splits = ("val", "test", "fulltest") if last else ("val", "test")
            last_eval, last_per_class = evaluate(
                method, data, splits, train, device, evaluation_dtype
            )
            record.update(last_eval)
        record["epoch_time_s"] = time.perf_counter() - epoch_start
        history.append(record)
        ckpt = save(epoch + 1) if last or (epoch + 1) % train.checkpoint_every == 0 else None
        done = epoch + 1 - start_epoch
        eta_s = (time.perf_counter() - start_time) / done * (epochs - epoch - 1)
        log.info(_epoch_line(record, epochs, eta_s),
                 extra={"epoch_record": record, "evaluated": evaluated})
        if report is not None and evaluated:
            report(record, ckpt, last_per_class)

    if start_epoch == epochs:  # nothing to train, or a resumed finished run: evaluate once
        last_eval, last_per_class = evaluate(
            method, data, ("val", "test", "fulltest"), train, device, evaluation_dtype
        )
        if not history:  # an evaluate-only method: one record, epoch 0
            history.append({"epoch": 0, **last_eval})
            ckpt = save(0)
            if report is not None:
                report(history[-1], ckpt, last_per_class)
    final = {
        **{k: v for k, v in history[-1].items() if not k.startswith(EVAL_PREFIXES)},
        **last_eval,
        "wall_time_s": time.perf_counter() - start_time,
        "precision": "fp32" if dtype is None else str(dtype).removeprefix("torch."),
        "device": str(device),
        "compiled": compiled,
    }
    return FitResult(final, last_per_class, history)


def _diverged(epoch: int, step: int, cfg: ExperimentConfig) -> None:
    raise TrainingDiverged(
        f"loss became NaN/inf at epoch {epoch + 1}, step {step} (method {cfg.method.name}, "
        f"optim.lr={cfg.optim.lr}); lower optim.lr or use train.precision=fp32"
    )


def _epoch_line(record: dict[str, Any], epochs: int, eta_s: float) -> str:
    """One epoch as a log line: epoch, lr, loss, the val/test figures when evaluated, speed and
    the time left at the run's mean epoch time so far."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"lr {record['learning_rate']:.4g}",
             f"loss {record['train_loss']:.4f}", f"train_acc {record['train_acc']:.3f}"]
    for key in ("val_acc", "val_hm", "val_lr", "test_acc"):
        if key in record and not math.isnan(record[key]):
            parts.append(f"{key} {record[key]:.3f}")
    parts.append(f"{record['train_images_per_s']:.0f} img/s")
    parts.append(f"eta {_duration(eta_s)}")
    return " | ".join(parts)


def _duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"

