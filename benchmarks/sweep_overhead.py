"""Per-trial overhead of a Ray Tune sweep against the same trials run sequentially without Ray.

Runs N small identical-shape trials (synthetic data, ResNet-20, a few epochs) twice: in-process
one after another through ``experiment.run`` (what ``lt-ray train`` does), and as a one-cell
study through lt-ray's Tuner with one trial at a time on a local Ray. Ray start-up is excluded
(it is paid once per study); the difference divided by N is the per-trial overhead (worker
process start, imports, reporting, checkpoint persistence). Target on CPU: <= 3 s per trial.

    python benchmarks/sweep_overhead.py [--trials 6] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

TINY = {
    "data": {"dataset": "synthetic", "imb_factor": 10,
             "synthetic": {"num_classes": 10, "n_max": 200, "image_size": 16,
                           "test_per_class": 20}},
    "model": {"arch": "resnet20"},
    "train": {"batch_size": 128, "precision": "fp32"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    base = {**TINY, "train": {**TINY["train"], "epochs": args.epochs}}
    lrs = [0.02 + 0.01 * i for i in range(args.trials)]

    from lt_ray.config import ExperimentConfig
    from lt_ray.experiment import run
    from lt_ray.resolution import resolve

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, lr in enumerate(lrs):
            cfg = ExperimentConfig.from_dict(base).replace({"optim.lr": lr})
            run(resolve(cfg), Path(tmp) / str(i))
    sequential = time.perf_counter() - start

    import ray

    from lt_ray.tune.parse import parse_spec
    from lt_ray.tune.tuner import fit_study

    spec = parse_spec({
        "name": "overhead", "base": base,
        "space": {"optim.lr": {"choice": lrs}},
        "search": {"sampler": "random", "metric": "val_acc", "mode": "max",
                   "num_samples": args.trials, "max_concurrent": 1,
                   "points_to_evaluate": [{"optim.lr": lr} for lr in lrs]},
        "resources": {"cpu": 2},
    })
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
             _node_ip_address="127.0.0.1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            results = fit_study(spec, Path(tmp), resume=False, data_root=None,
                                optuna_storage=None)
            swept = time.perf_counter() - start
    finally:
        ray.shutdown()
    assert all(r.error is None for r in results)
    print(json.dumps({
        "trials": args.trials, "epochs_per_trial": args.epochs,
        "sequential_s": round(sequential, 2), "sweep_s": round(swept, 2),
        "overhead_per_trial_s": round((swept - sequential) / args.trials, 2),
    }, indent=1))


if __name__ == "__main__":
    main()
