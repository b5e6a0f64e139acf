"""What a GML trial costs once its base exists: the re-training runs on cached features.

Builds a CE base on CIFAR-10-LT IF 100 (``--base-epochs``, default 1: the weights do not
matter for the timing) as a stage artifact in a temporary folder, then times, in one run:

1. the first trial, which builds the feature cache (the frozen backbone over train, val,
   test and fulltest, once per base) and trains one epoch;
2. a GML re-training (30 epochs, the recipe) on the cached features, as a trial runs it
   (``experiment.run``: data loading, building the method, training, evaluating 3 outputs);
3. an ensemble-only trial (``freeze: all``): the t1/t2 evaluation of a GML run's two heads;
4. for scale, one epoch of the base itself (end-to-end training on images).

    python benchmarks/gml_trial.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from lt_ray.config import ExperimentConfig
from lt_ray.data import build_dataset
from lt_ray.experiment import run
from lt_ray.resolution import resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--base-epochs", type=int, default=1)
    args = parser.parse_args()
    base = {"data": {"dataset": "cifar10", "imb_factor": 100, "download": False},
            "train": {"eval_every": 1000}}
    data_cfg = ExperimentConfig.from_dict(base).data
    data = build_dataset(data_cfg, args.data_root)
    stage = {"method": {"name": "ce"}, "train": {"epochs": args.base_epochs}}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = str(Path(tmp) / "artifacts")
        start = time.perf_counter()
        run(resolve(ExperimentConfig.from_dict({**base, **stage})), None, data=data)
        timings["base_epoch_s"] = (time.perf_counter() - start) / args.base_epochs
        gml = ExperimentConfig.from_dict({**base, "method": {"name": "gml"},
                                          "pretrained": stage})
        start = time.perf_counter()
        run(resolve(gml.replace({"train.epochs": 1})), None, data=data, artifacts=root)
        timings["first_trial_1_epoch_with_feature_cache_s"] = time.perf_counter() - start
        start = time.perf_counter()
        trained = run(resolve(gml), None, data=data, artifacts=root)
        timings["gml_trial_30_epochs_s"] = time.perf_counter() - start
        ens = ExperimentConfig.from_dict({
            **base, "method": {"name": "gml", "args": {"freeze": "all", "ensemble": "prob",
                                                       "t1": 2.0}},
            "pretrained": {"method": {"name": "gml"}, "pretrained": stage},
        })
        run(resolve(ens), None, data=data, artifacts=root)  # builds the GML stage and its cache
        start = time.perf_counter()
        run(resolve(ens.replace({"method.args.t2": 0.5})), None, data=data, artifacts=root)
        timings["ensemble_trial_s"] = time.perf_counter() - start
    print(json.dumps({
        "data": f"{data.name}-LT IF100, {len(data.train)} train images",
        **{k: round(v, 2) for k, v in timings.items()},
        "gml_epochs_per_s": round(30 / timings["gml_trial_30_epochs_s"], 1),
        "gml_test_acc_new": round(trained.metrics["test_acc_new"], 4),
    }, indent=1))


if __name__ == "__main__":
    main()
