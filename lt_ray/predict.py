"""Use a trained lt-ray checkpoint: classify image files, or evaluate a whole split again.

:func:`load_trained` restores any registered method from its ``checkpoint.pt`` (the config in
the checkpoint says what to build; a GML checkpoint holds its base's weights, so no stage
artifact is needed). Images go through the training preprocessing: RGB, resized to the
dataset's resolution, then the engine's :class:`~lt_ray.data.DeviceLoader` normalisation
(``(x/255 - mean) / std`` with the dataset's statistics). :func:`evaluate_split` re-runs the
engine's evaluation (:func:`lt_ray.engine.evaluate`) with the checkpoint's train config, so
its metrics are the ones the run recorded for its last epoch.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lt_ray.checkpoint import checkpoint_file, load_checkpoint, load_weights
from lt_ray.config import ExperimentConfig
from lt_ray.data import DeviceLoader, LTData, Split, build_dataset
from lt_ray.data.cifar import CIFAR_MEAN, CIFAR_STD
from lt_ray.engine import eval_dtype, evaluate
from lt_ray.errors import CheckpointError, ConfigError, DataError, LTRayError
from lt_ray.experiment import build_method
from lt_ray.methods import Method
from lt_ray.metrics import EVAL_SPLITS, METRICS
from lt_ray.resolution import resolve


@dataclass(frozen=True)
class Trained:
    """A restored method (in eval mode, on ``device``) and what its checkpoint says."""

    method: Method
    cfg: ExperimentConfig  # resolved
    class_names: list[str]
    class_counts: torch.Tensor  # int64 [C], the training split's
    path: Path
    device: torch.device

    @property
    def outputs(self) -> tuple[str, ...]:
        """The named outputs of ``predict`` (GML: old, new, ens); () for one tensor."""
        return self.method.outputs

    @property
    def primary_output(self) -> str | None:
        return self.method.primary_output


@dataclass(frozen=True)
class InputSpec:
    """What an image must look like for the network: side in pixels, normalisation."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Ranked:
    """One class of a top-k list."""

    name: str
    index: int
    probability: float


@dataclass(frozen=True)
class ImagePrediction:
    """The top-k of one image: ``top_k`` for the primary output, ``by_output`` for each named
    output (empty for a method with one output)."""

    image: str
    top_k: list[Ranked]
    by_output: dict[str, list[Ranked]]


def load_trained(path: str | Path, device: torch.device | str = "cpu") -> Trained:
    """Restore the method of lt-ray checkpoint ``path`` (a file, or a folder holding
    ``checkpoint.pt``) on ``device``, in eval mode. A CheckpointError for anything that is
    not an lt-ray checkpoint (a bare state dict, another torch file, a corrupt one)."""
    path = checkpoint_file(path)
    device = torch.device(device)
    saved = load_checkpoint(path)
    missing = [k for k in ("config", "class_counts", "state_dict") if not saved.get(k)]
    if saved["format_version"] is None or missing:
        raise CheckpointError(
            f"{path} is not an lt-ray checkpoint (it holds "
            + ("a bare state dict" if saved["format_version"] is None
               else f"no {', '.join(missing)}")
            + "); give the checkpoint.pt of an `lt-ray train` run or a Ray trial"
        )
    raw = saved["config"]
    counts = saved["class_counts"]
    if not isinstance(raw, dict) or not isinstance(counts, list) or not all(
            isinstance(c, int) for c in counts):
        raise CheckpointError(f"{path}: its config or class counts are malformed")
    try:
        resolved = resolve(ExperimentConfig.from_dict(raw))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: the config it records is invalid here: {exc}") from None
    except LTRayError as exc:  # e.g. the base checkpoint of a stage is gone
        name = (raw.get("method") or {}).get("name")
        raise CheckpointError(f"cannot rebuild the {name} method of {path}: {exc}") from None
    class_counts = torch.tensor(counts, dtype=torch.int64)
    names = saved.get("class_names")
    if not isinstance(names, list) or len(names) != len(counts):
        names = [f"class_{i}" for i in range(len(counts))]
    cfg = resolved.config
    try:
        method = build_method(resolved, None, device, class_counts=class_counts,
                              load_weights=False)
    except LTRayError as exc:
        raise CheckpointError(f"cannot rebuild the {cfg.method.name} method of {path}: "
                              f"{exc}") from None
    load_weights(method, saved["state_dict"], source=str(path))
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    method.to(device=device, memory_format=memory_format)  # as engine.fit does
    method.eval()
    return Trained(method, cfg, [str(n) for n in names], class_counts, path, device)


def input_spec(cfg: ExperimentConfig, data_root: str | None = None) -> InputSpec:
    """The training resolution and normalisation of ``cfg.data``: CIFAR's constants; the
    synthetic dataset's (and any other's) from the dataset itself."""
    if cfg.data.dataset in ("cifar10", "cifar100"):
        return InputSpec(32, tuple(CIFAR_MEAN), tuple(CIFAR_STD))
    data = build_data(cfg, data_root)  # synthetic: generated, no files
    return InputSpec(int(data.train.x.shape[-1]), tuple(data.mean), tuple(data.std))


def build_data(cfg: ExperimentConfig, data_root: str | None = None) -> LTData:
    """The checkpoint's dataset; ``data_root`` (``--data-root``) wins over a recorded
    ``data.root`` (a study records the driver's absolute folder)."""
    data_cfg = cfg.data if data_root is None else dataclasses.replace(cfg.data, root=None)
    return build_dataset(data_cfg, data_root)


def read_images(paths: Sequence[str | Path], size: int) -> torch.Tensor:
    """uint8 [B, 3, size, size] of image files (any format Pillow reads: RGB, resized with
    bilinear filtering when the size differs). An LTRayError names an unreadable file."""
    import numpy as np
    from PIL import Image

    images = []
    for path in paths:
        try:
            with warnings.catch_warnings():  # a huge image is refused, not warned about
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    rgb = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as exc:
            why = "no such file" if isinstance(exc, FileNotFoundError) else (
                f"not a readable image: {type(exc).__name__}: {str(exc)[:200]}")
            raise LTRayError(f"image {path}: {why}") from None
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        images.append(torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1))
    return torch.stack(images).contiguous()


def normalise(images: torch.Tensor, spec: InputSpec, *, channels_last: bool = False,
              batch_size: int = 1000) -> torch.Tensor:
    """Float [B, 3, H, W] of uint8 ``images``, exactly as the engine's evaluation batches."""
    split = Split(images, torch.zeros(len(images), dtype=torch.int64, device=images.device))
    loader = DeviceLoader(split, batch_size=batch_size, mean=spec.mean, std=spec.std,
                          train=False, channels_last=channels_last)
    return torch.cat([batch.x for batch in loader])


def _ranked(logits: torch.Tensor, k: int, names: list[str]) -> list[list[Ranked]]:
    probs = torch.softmax(logits.float(), dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[Ranked(names[i], i, float(p)) for p, i in zip(row_p.tolist(), row_i.tolist(),
                                                           strict=True)]
            for row_p, row_i in zip(values, indices, strict=True)]


def predict_images(trained: Trained, paths: Sequence[str | Path], *, top_k: int = 5,
                   data_root: str | None = None) -> list[ImagePrediction]:
    """The top-k classes (softmax of the calibrated logits) of every image in ``paths``."""
    if top_k < 1:
        raise LTRayError(f"--top-k must be >= 1, got {top_k}")
    if not paths:
        return []
    spec = input_spec(trained.cfg, data_root)
    images = read_images(paths, spec.size)
    return predict_pixels(trained, images, [str(p) for p in paths], top_k=top_k, spec=spec)


@torch.no_grad()
def predict_pixels(trained: Trained, images: torch.Tensor, names: Sequence[str], *,
                   top_k: int = 5, spec: InputSpec) -> list[ImagePrediction]:
    """The top-k classes of uint8 ``images`` [B, 3, H, W] at the network's resolution (read
    files, or a dataset's own images), named ``names`` in the result."""
    train = trained.cfg.train
    x = normalise(images.to(trained.device), spec, channels_last=train.channels_last,
                  batch_size=train.eval_batch_size)
    parts: dict[str | None, list[torch.Tensor]] = {}
    for start in range(0, len(x), train.eval_batch_size):
        out = trained.method.predict(x[start:start + train.eval_batch_size])
        named = {**out, None: out[trained.primary_output]} if isinstance(out, dict) else {
            None: out}
        for key, logits in named.items():
            parts.setdefault(key, []).append(logits)
    ranked = {key: _ranked(torch.cat(v), top_k, trained.class_names) for key, v in parts.items()}
    return [
        ImagePrediction(name, ranked[None][i],
                        {output: ranked[output][i] for output in trained.outputs})
        for i, name in enumerate(names)
    ]


def evaluate_split(trained: Trained, split: str, *, data_root: str | None = None,
                   data: LTData | None = None) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Flat metrics (``{split}_{metric}`` and, per named output, ``..._{output}``; fractions)
    and per-class recall of ``split`` of the checkpoint's dataset, through the engine's
    evaluation with the checkpoint's train config (its eval precision: fp32 by default)."""
    if split not in EVAL_SPLITS:
        raise LTRayError(f"--split {split!r} is not one of {', '.join(EVAL_SPLITS)}")
    if data is None:
        data = build_data(trained.cfg, data_root)
    if not torch.equal(data.class_counts.cpu(), trained.class_counts):
        raise DataError(
            f"the dataset built here ({data.name}, train counts {data.class_counts.tolist()}) is "
            f"not the one {trained.path} was trained on (train counts "
            f"{trained.class_counts.tolist()}); point --data-root at the same data"
        )
    train = trained.cfg.train
    return evaluate(trained.method, data.to(trained.device), (split,), train, trained.device,
                    eval_dtype(train, trained.device))


# --- output ------------------------------------------------------------------------------


def _ranked_json(items: list[Ranked]) -> list[dict[str, Any]]:
    return [{"class": r.name, "index": r.index, "probability": r.probability} for r in items]


def predictions_json(trained: Trained, predictions: list[ImagePrediction]) -> list[dict[str, Any]]:
    """``[{"image", "top_k": [{"class", "index", "probability"}], ...}]``; a method with named
    outputs adds ``output`` (the primary one) and ``outputs`` (each one's top-k)."""
    docs = []
    for p in predictions:
        doc: dict[str, Any] = {"image": p.image, "top_k": _ranked_json(p.top_k)}
        if p.by_output:
            doc["output"] = trained.primary_output
            doc["outputs"] = {name: _ranked_json(r) for name, r in p.by_output.items()}
        docs.append(doc)
    return docs


def format_predictions(trained: Trained, predictions: list[ImagePrediction]) -> str:
    """A readable table: per image, its top-k classes and probabilities (%)."""
    width = max([len(r.name) for p in predictions for r in p.top_k] + [5])
    lines = []
    if trained.outputs:
        lines.append(f"output: {trained.primary_output} (of {', '.join(trained.outputs)}; "
                     "--json lists each)")
    for p in predictions:
        lines.append(p.image)
        lines += [f"  {rank:>3}  {r.name:<{width}}  {100 * r.probability:7.2f}%"
                  for rank, r in enumerate(p.top_k, 1)]
        if p.by_output:
            lines.append("  top-1 by output: " + ", ".join(
                f"{name} {r[0].name} {100 * r[0].probability:.2f}%"
                for name, r in p.by_output.items()))
    return "\n".join(lines)


def _json_number(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def metrics_json(trained: Trained, split: str, metrics: dict[str, float],
                 per_class: dict[str, list[float]]) -> dict[str, Any]:
    """The split's metrics as metrics.json names them (fractions; NaN as null)."""
    return {
        "checkpoint": str(trained.path),
        "method": trained.cfg.method.name,
        "dataset": trained.cfg.data.dataset,
        "split": split,
        "output": trained.primary_output,
        "metrics": {k: _json_number(v) for k, v in metrics.items()},
        "per_class_recall": {k: [_json_number(x) for x in v] for k, v in per_class.items()},
        "class_names": trained.class_names,
    }


def format_metrics(trained: Trained, split: str, metrics: dict[str, float]) -> str:
    """One row per output (the named ones of a method with several, the primary marked *),
    metrics in %."""
    rows = [f"{trained.cfg.method.name} on {trained.cfg.data.dataset}, split {split} (%)",
            "output    " + "".join(f"{m:>8}" for m in METRICS)]
    primary = trained.primary_output
    labels = [(f"_{name}", name + "*" * (name == primary)) for name in trained.outputs]
    for suffix, label in labels or [("", "model")]:
        cells = []
        for m in METRICS:
            v = metrics.get(f"{split}_{m}{suffix}")
            cells.append(f"{'-':>8}" if v is None or v != v else f"{100 * v:8.2f}")
        rows.append(f"{label:<10}" + "".join(cells))
    if labels:
        rows.append(f"(* the output the plain {split}_<metric> names report)")
    return "\n".join(rows)
