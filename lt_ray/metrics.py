"""Per-class recall and the long-tail summary metrics; every metric name is defined here.

All values are fractions in [0, 1]. ``gm``/``hm`` use the raw definition: one class with zero
recall makes both 0. ``gm_eps``/``hm_eps`` are the GML authors' variant (BTM ``eval.py``): a zero
recall counts as ``EPS_FLOOR`` = 1e-3, so one dead class lowers them instead of zeroing them.
Search on the ``_eps`` variants when a validation class can plausibly score 0 (CIFAR-100-LT
halves have 50 images per class): the raw ones are then flat at 0 and give a searcher nothing.
Shot groups follow the train-count rule of PaCo/RIDE: many > 100, medium 20..100, few < 20
training images; a group with no class is NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SPLITS: tuple[str, ...] = ("train", "val", "test", "fulltest")
METRICS: tuple[str, ...] = ("acc", "gm", "hm", "lr", "many", "medium", "few", "gm_eps", "hm_eps")
EPS_FLOOR = 1e-3  # recall floor of gm_eps / hm_eps (BTM eval.py)
EVAL_SPLITS: tuple[str, ...] = ("val", "test", "fulltest")
MANY_MIN_COUNT = 100  # a class with more training images than this is "many"
FEW_MAX_COUNT = 20  # a class with fewer training images than this is "few"


def metric_name(split: str, metric: str, output: str | None = None) -> str:
    """The flat name used by the loop, the CLI, Ray reports and Parquet: ``val_hm``; a named
    output of a method with several (GML's ``old``, ``new``, ``ens``) adds a suffix:
    ``val_hm_old``."""
    if split not in SPLITS or metric not in METRICS:
        raise KeyError(f"unknown split/metric {split!r}/{metric!r}")
    if output is None:
        return f"{split}_{metric}"
    check_output_name(output)
    return f"{split}_{metric}_{output}"


def check_output_name(output: str) -> None:
    """An output name is lower-case letters and digits, and not a metric suffix (``eps``)."""
    if not output.isalnum() or not output.islower() or output in ("eps",):
        raise ValueError(f"output name {output!r}: use lower-case letters and digits, not 'eps'")


def parse_metric_name(name: str) -> tuple[str, str, str | None] | None:
    """``val_hm_eps_old`` -> ``("val", "hm_eps", "old")``; None when ``name`` is no metric."""
    split, _, rest = name.partition("_")
    if split not in EVAL_SPLITS:
        return None
    for metric in sorted(METRICS, key=len, reverse=True):  # hm_eps before hm
        if rest == metric:
            return split, metric, None
        if rest.startswith(metric + "_") and rest[len(metric) + 1:].isalnum():
            return split, metric, rest[len(metric) + 1:]
    return None


ALL_NAMES: tuple[str, ...] = tuple(metric_name(s, m) for s in EVAL_SPLITS for m in METRICS)


def is_eval_stat(name: str) -> bool:
    """Whether ``name`` is a method's statistic of an evaluated split (``Method.eval_stats``,
    reported as ``{split}_{word}``: RIDE's router ``test_experts``), not a metric."""
    split, _, rest = name.partition("_")
    return split in EVAL_SPLITS and rest.isalpha() and parse_metric_name(name) is None


def per_class_recall(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> np.ndarray:
    """Recall of each class: correct predictions of class j / samples of class j (NaN if none)."""
    preds = preds.detach().to("cpu", torch.int64)
    targets = targets.detach().to("cpu", torch.int64)
    total = torch.bincount(targets, minlength=num_classes).double()
    correct = torch.bincount(targets[preds == targets], minlength=num_classes).double()
    recall = torch.where(total > 0, correct / total.clamp_min(1), torch.nan)
    return recall.numpy()


def shot_masks(train_counts: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    counts = np.asarray(train_counts)
    return {
        "many": counts > MANY_MIN_COUNT,
        "medium": (counts >= FEW_MAX_COUNT) & (counts <= MANY_MIN_COUNT),
        "few": counts < FEW_MAX_COUNT,
    }


def summarize(
    recall: np.ndarray, train_counts: np.ndarray | torch.Tensor, eps: float = 0.0
) -> dict[str, float]:
    """acc, gm, hm, lr, many, medium, few from a per-class recall vector.

    ``acc`` here is the mean per-class recall, which equals top-1 accuracy on a balanced split;
    :func:`split_metrics` reports the plain top-1 accuracy.
    """
    r = np.asarray(recall, dtype=np.float64)
    present = ~np.isnan(r)
    rp = r[present]
    if eps > 0:
        rp = np.where(rp == 0, eps, rp)
    floored = np.where(rp == 0, EPS_FLOOR, rp)
    out = {
        "acc": float(rp.mean()),
        "gm": _gm(rp),
        "hm": _hm(rp),
        "lr": float(rp.min()),
        "gm_eps": _gm(floored),
        "hm_eps": _hm(floored),
    }
    for group, mask in shot_masks(train_counts).items():
        sel = r[mask & present]
        out[group] = float(sel.mean()) if sel.size else float("nan")
    return out


def _gm(r: np.ndarray) -> float:
    return 0.0 if (r == 0).any() else float(math.exp(np.log(r).mean()))


def _hm(r: np.ndarray) -> float:
    return 0.0 if (r == 0).any() else float(len(r) / np.sum(1.0 / r))


def split_metrics(
    split: str, preds: torch.Tensor, targets: torch.Tensor, train_counts: torch.Tensor,
    output: str | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Flat ``{split}_{metric}[_{output}]`` values and the per-class recall of one split."""
    recall = per_class_recall(preds, targets, len(train_counts))
    summary = summarize(recall, train_counts.cpu().numpy())
    summary["acc"] = float((preds.cpu() == targets.cpu()).double().mean())  # top-1 accuracy
    return {metric_name(split, k, output): v for k, v in summary.items()}, recall
