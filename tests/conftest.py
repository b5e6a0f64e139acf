"""Shared fixtures: tiny synthetic experiments that train in seconds on a 2-core CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from lt_ray.config import ExperimentConfig
from s3server import s3, s3_endpoint  # noqa: F401  (fixtures: a moto S3 server)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAS_CIFAR10 = (SHARED_DATA / "cifar-10-batches-py" / "data_batch_1").is_file()

TINY = {
    "seed": 0,
    "data": {
        "dataset": "synthetic",
        "imb_factor": 10,
        "synthetic": {"num_classes": 4, "n_max": 48, "image_size": 8, "test_per_class": 16},
    },
    "model": {"arch": "resnet20"},
    "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 64, "precision": "fp32"},
}


def tiny_overrides() -> list[str]:
    """TINY as ``--set`` arguments for the CLI."""
    out = []

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out.extend(["--set", f"{prefix}{key}={value}"])

    walk(TINY, "")
    return out


@pytest.fixture
def tiny_cfg() -> ExperimentConfig:
    return ExperimentConfig.from_dict(TINY)


def assert_refused(res, out: Path, *needles: str) -> None:
    """A CLI call that failed as a bad input must: exit code 2, one ``error:`` line holding
    every needle, and nothing written at ``out``."""
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
