"""Fidelity: controlled comparisons on the real CIFAR-10-LT, printed as one table.

Each run is one ``experiment.run`` (the code path of ``lt-ray train``) of a (method, precision,
data, seed) combination; everything else is the method's default recipe. The factors:

* precision: ``bf16_all`` = bf16 autocast over the whole model and the evaluation (lt-ray's
  default before the fidelity fix), ``bf16`` = bf16 autocast in the backbone with the classifier
  head, loss and evaluation in fp32 (the default now), ``fp32`` = no autocast at all;
* data: ``copy`` = ../shared/data as it is (a JPEG quality-75 decode of CIFAR-10, PSNR 30.4 dB
  against the originals), ``jpeg54`` = the same copy JPEG-encoded once more at quality 54,
  which costs another 30.3 dB: a second degradation of the same strength, to measure what the
  first one costs;
* seeds: model init, sampling and augmentation (the long-tailed subset and the val/test split
  stay LDAM-DRW's).

After training, every run's final checkpoint is evaluated twice more on the full official test
set, in fp32 and with the training autocast, and the largest per-class recall difference is
stored (``evalcheck.json``): the check that the reported numbers do not depend on the
evaluation precision. The table also gives the "best-epoch" accuracy: the best full-test
accuracy over the evaluated epochs, which is what the official LDAM-DRW code reports
(``best_acc1``, a selection on the test set); lt-ray reports the last epoch.

``--epochs`` shorter than 200 scales the schedule (warm-up, lr steps and the DRW switch are
fractions of the run), which makes controlled comparisons with several seeds affordable.

Runs are resumable (a checkpoint every epoch) and skipped once finished, so the same command
continues an interrupted plan. ``--workers 2`` trains two runs side by side with one thread
each, which on a 2-core CPU is ~1.2x the throughput of one run on two threads.

    python benchmarks/fidelity.py run --data-root ../shared/data --out runs/fidelity \\
        --methods ldam_drw ce --precisions bf16 fp32 --seeds 0 1 --epochs 200 --workers 2
    python benchmarks/fidelity.py table --out runs/fidelity
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

PRECISIONS: dict[str, dict[str, Any]] = {
    "bf16_all": {"precision": "bf16", "fp32_head": False, "eval_precision": "train"},
    "bf16": {"precision": "bf16", "fp32_head": True, "eval_precision": "fp32"},
    "fp32": {"precision": "fp32", "fp32_head": True, "eval_precision": "fp32"},
}
DATA_VARIANTS = {"copy": None, "jpeg54": 54}
#: CIFAR-10-LT IF 100, ResNet-32, 200 epochs, top-1 % (METHODS.md §13, recalled: status U).
PAPER = {"ce": 70.36, "ldam_drw": 77.03, "bsce": None, "lade": None}


@dataclasses.dataclass(frozen=True)
class Job:
    method: str
    precision: str
    data: str
    seed: int
    epochs: int

    @property
    def name(self) -> str:
        return f"{self.method}-e{self.epochs}-{self.precision}-{self.data}-s{self.seed}"

    def overrides(self) -> dict[str, Any]:
        train = {f"train.{k}": v for k, v in PRECISIONS[self.precision].items()}
        return {
            "method.name": self.method, "seed": self.seed, "data.dataset": "cifar10",
            "data.imb_factor": 100, "data.download": False, "train.epochs": self.epochs,
            "train.eval_every": max(1, self.epochs // 10), "train.device": "cpu", **train,
        }


def recompress(data: Any, quality: int) -> Any:
    """Every split JPEG-encoded and decoded once more at ``quality`` (torchvision, libjpeg)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    def split(s: Any) -> Any:
        out = torch.empty_like(s.x)
        for i in range(0, len(s), 2048):
            chunk = encode_jpeg(list(s.x[i : i + 2048]), quality=quality)
            out[i : i + len(chunk)] = torch.stack([decode_jpeg(c) for c in chunk])
        return dataclasses.replace(s, x=out)

    return dataclasses.replace(
        data, train=split(data.train), val=split(data.val), test=split(data.test),
        fulltest=split(data.fulltest),
    )


def run_job(job: Job, out: str, data_root: str, threads: int) -> str:
    """Train (or resume) one run, then write its evaluation-precision check."""
    torch.set_num_threads(threads)
    run_dir = Path(out) / job.name
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir.with_suffix(".log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("lt_ray")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        train_and_check(job, run_dir, data_root)
    finally:
        logger.removeHandler(handler)
        handler.close()
    return job.name


def train_and_check(job: Job, run_dir: Path, data_root: str) -> None:
    from lt_ray.config import ExperimentConfig
    from lt_ray.data import build_dataset
    from lt_ray.experiment import METRICS_FILE, run
    from lt_ray.resolution import resolve

    resolved = resolve(ExperimentConfig().replace(job.overrides()))
    cfg = resolved.config
    data = build_dataset(cfg.data, data_root)
    if DATA_VARIANTS[job.data] is not None:
        data = recompress(data, DATA_VARIANTS[job.data])
    if not (run_dir / METRICS_FILE).is_file():
        run(resolved, run_dir, data=data, resume=True)
    if not (run_dir / "evalcheck.json").is_file():
        (run_dir / "evalcheck.json").write_text(json.dumps(eval_check(resolved, data, run_dir)))


def eval_check(resolved: Any, data: Any, run_dir: Path) -> dict[str, Any]:
    """Per-class fulltest recall of the final checkpoint, in fp32 and in bf16 autocast."""
    from lt_ray.checkpoint import load_checkpoint
    from lt_ray.engine import evaluate
    from lt_ray.experiment import CHECKPOINT_FILE, build_method

    device = torch.device("cpu")
    cfg = resolved.config
    method = build_method(resolved, data, device)
    method.load_state_dict(load_checkpoint(run_dir / CHECKPOINT_FILE)["state_dict"])
    method.to(memory_format=torch.channels_last)
    out: dict[str, Any] = {}
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        flat, per_class = evaluate(method, data, ("fulltest",), cfg.train, device, dtype)
        out[label] = {"acc": flat["fulltest_acc"], "recall": per_class["fulltest"]}
    diffs = [abs(a - b) for a, b in zip(out["fp32"]["recall"], out["bf16"]["recall"], strict=True)]
    out["max_class_diff"] = max(diffs)
    out["acc_diff"] = abs(out["fp32"]["acc"] - out["bf16"]["acc"])
    return out


def cmd_run(args: argparse.Namespace) -> None:
    jobs = [
        Job(m, p, d, s, args.epochs)
        for m, p, d, s in itertools.product(args.methods, args.precisions, args.data, args.seeds)
    ]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(f"{len(jobs)} runs, {args.workers} at a time, {threads} thread(s) each -> {args.out}")
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(run_job, job, args.out, args.data_root, threads) for job in jobs
        ]
        for future in as_completed(futures):
            print("done:", future.result(), flush=True)
    cmd_table(args)


def cmd_table(args: argparse.Namespace) -> None:
    """One row per (method, epochs, precision, data): fulltest metrics over the seeds."""
    rows: dict[tuple, list[dict[str, Any]]] = {}
    for metrics_file in sorted(Path(args.out).glob("*/metrics.json")):
        m = json.loads(metrics_file.read_text())
        c = m["config"]
        check_file = metrics_file.parent / "evalcheck.json"
        check = json.loads(check_file.read_text()) if check_file.is_file() else {}
        name = metrics_file.parent.name
        key = (c["method"]["name"], c["train"]["epochs"], name.split("-")[2], name.split("-")[3])
        rows.setdefault(key, []).append({**m, "_check": check, "_seed": c["seed"]})

    def stat(values: list[float]) -> str:
        pct = [100 * v for v in values]
        if len(pct) == 1:
            return f"{pct[0]:.1f}"
        return f"{statistics.mean(pct):.1f} ± {statistics.stdev(pct):.1f}"

    def best_epoch_acc(run: dict[str, Any]) -> float:
        """The official LDAM-DRW code's number: the best full-test accuracy over the evaluated
        epochs (a selection on the test set). The halves are equal in size, so the full test
        set's accuracy is the mean of the val and test halves'."""
        evaluated = [(h["val_acc"] + h["test_acc"]) / 2 for h in run.get("history", [])
                     if h.get("val_acc") is not None and h.get("test_acc") is not None]
        return max([*evaluated, run["fulltest_acc"]])

    header = ("| method | epochs | precision | data | seeds | acc | HM | LR | per seed (acc) "
              "| best-epoch acc | paper acc | max Δ recall fp32 vs bf16 eval |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for (method, epochs, precision, data), runs in sorted(rows.items()):
        checks = [r["_check"]["max_class_diff"] for r in runs if r["_check"]]
        paper = PAPER.get(method)
        seeds_acc = " ".join(f"{100 * r['fulltest_acc']:.1f}" for r in runs)
        print(
            f"| {method} | {epochs} | {precision} | {data} | "
            f"{','.join(str(r['_seed']) for r in runs)} | "
            f"{stat([r['fulltest_acc'] for r in runs])} | "
            f"{stat([r['fulltest_hm'] for r in runs])} | "
            f"{stat([r['fulltest_lr'] for r in runs])} | "
            f"{seeds_acc} | "
            f"{stat([best_epoch_acc(r) for r in runs])} | "
            f"{paper if paper else '-'} | "
            f"{f'{100 * max(checks):.1f}' if checks else '-'} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run_p = sub.add_parser("run", help="train the runs of a plan (resumable), then print")
    run_p.add_argument("--data-root", required=True)
    run_p.add_argument("--out", required=True)
    run_p.add_argument("--methods", nargs="+", default=["ldam_drw", "ce"])
    run_p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    run_p.add_argument("--data", nargs="+", default=["copy"], choices=DATA_VARIANTS)
    run_p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    run_p.add_argument("--epochs", type=int, default=200)
    run_p.add_argument("--workers", type=int, default=2)
    run_p.add_argument("--threads", type=int, default=None,
                       help="torch threads per run (default: the cores / --workers)")
    table_p = sub.add_parser("table", help="print the table of the finished runs")
    table_p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    {"run": cmd_run, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
