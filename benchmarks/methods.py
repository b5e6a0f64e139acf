"""Training throughput of every multi-network method against plain CE on the same model.

Each method trains ResNet-32 (RIDE: its multi-expert ResNet-32) on the same images through
the engine, ``--epochs`` epochs of which the last is timed (the engine's
``train_images_per_s``; the first epoch warms up kernels). Stage-2 methods (``mislas``,
``ride_ea``) get a one-epoch stage 1 first, not timed. Expected: PaCo's second view and
momentum encoder cost about 2x CE (more means its augmentation path needs work); MiSLAS
stage 2 and RIDE's router are cheaper than CE (frozen backbones).

    python benchmarks/methods.py --data-root ../shared/data [--images 4096] [--threads 2]

Prints one JSON object: images/s per method and the ratio CE / method ("x slower").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import load  # noqa: E402  (same data loading as the engine benchmark)

from lt_ray.config import ExperimentConfig  # noqa: E402
from lt_ray.data import LTData  # noqa: E402
from lt_ray.data.base import Split  # noqa: E402
from lt_ray.experiment import run  # noqa: E402
from lt_ray.methods import METHODS as REGISTRY  # noqa: E402
from lt_ray.resolution import resolve  # noqa: E402

METHODS = ("ce", "mislas_stage1", "mislas", "ride", "ride_distill", "ride_ea", "paco")


def small_eval(data: LTData, n: int = 1000) -> LTData:
    """The same training images; evaluation splits cut to ``n`` images (not timed anyway)."""
    cut = [Split(s.x[:n], s.y[:n]) for s in (data.val, data.test, data.fulltest)]
    return LTData(data.name, data.train, *cut, data.class_counts, data.class_names,
                  data.mean, data.std)


def method_rate(name: str, data: LTData, epochs: int, precision: str, root: str) -> float:
    raw = {
        "data": {"dataset": "cifar10"}, "model": {"arch": "resnet32"}, "method": {"name": name},
        "train": {"epochs": epochs, "precision": precision, "eval_every": 10_000,
                  "device": "cpu"},
    }
    if REGISTRY.get(name).needs_base:  # its recipe's stage 1 (else ce), for one epoch
        raw["pretrained"] = {"train": {"epochs": 1, "precision": precision,
                                       "eval_every": 10_000}}
    cfg = ExperimentConfig.from_dict(raw)  # paco's default queue (1024) is 8 batches of 128
    result = run(resolve(cfg), None, data=data, artifacts=root)
    return float(result.history[-1]["train_images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("LT_RAY_DATA"))
    parser.add_argument("--images", type=int, default=4096, help="train images per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    parser.add_argument("--precision", default="auto", help="auto | bf16 | fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data, source = load(args.data_root, args.images)
    data = small_eval(data)
    rates = {}
    with tempfile.TemporaryDirectory() as root:
        for name in args.methods.split(","):
            start = time.perf_counter()
            rates[name] = round(method_rate(name, data, args.epochs, args.precision, root), 1)
            print(f"{name}: {rates[name]} img/s ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr)
    ce = rates.get("ce")
    print(json.dumps({
        "data": source, "train_images": len(data.train), "precision": args.precision,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "images_per_s": rates,
        "x_slower_than_ce": {k: round(ce / v, 2) for k, v in rates.items()} if ce else None,
    }, indent=1))


if __name__ == "__main__":
    main()
