"""The MiSLAS, RIDE and PaCo study files run end to end on Ray (--smoke, tiny synthetic data)
and export Parquet with their searched hyper-parameters and metrics."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import tiny_overrides
from lt_ray.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

SEARCHED = {
    "mislas": ("cfg.method.args.lr_factor", "cfg.method.loss_args.smooth_head"),
    "ride": ("cfg.method.args.num_experts", "cfg.method.args.diversity_factor"),
    "paco": ("cfg.method.args.queue_size", "cfg.method.args.temperature"),
}


@pytest.mark.parametrize("name", sorted(SEARCHED))
def test_study_file_smoke_runs_on_ray_and_exports_parquet(tmp_path, name):
    pairs = zip(tiny_overrides()[::2], tiny_overrides()[1::2], strict=True)
    skip = ("train.", "data.imb_factor", "data.synthetic.n_max")  # the studies' own
    tiny = [a for pair in pairs if not pair[1].startswith(skip) for a in pair]
    args = ["sweep", f"search_spaces/{name}.yaml", "--smoke", "--storage", str(tmp_path),
            "--no-dashboard", *tiny, "--set", "train.batch_size=16",
            "--set", "resources.gpu=0"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / name / "trials.parquet")
    assert len(trials) == 2 and set(trials.status) == {"completed"}, trials.status
    for column in (*SEARCHED[name], "test_hm", "test_acc", "val_lr"):
        assert trials[column].notna().all(), column
    per_class = pd.read_parquet(tmp_path / name / "per_class.parquet")
    assert set(per_class["split"]) >= {"val", "test"}


def test_router_study_exports_the_mean_expert_count(tmp_path):
    import yaml

    from conftest import TINY

    raw = {
        "name": "router",
        "base": {**TINY, "method": {"name": "ride_ea"},
                 "train": {**TINY["train"], "epochs": 1, "batch_size": 16},
                 "pretrained": {"train": {"epochs": 1, "batch_size": 16}}},
        "space": {"method.args.pos_weight": {"choice": [10.0, 100.0]}},
        "search": {"metric": "val_acc", "mode": "max", "num_samples": 2, "max_concurrent": 2},
        "resources": {"cpu": 1},
    }
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(main, ["sweep", str(path), "--storage", str(tmp_path / "res"),
                                    "--no-dashboard"])
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / "res" / "router" / "trials.parquet")
    assert set(trials.status) == {"completed"}
    for split in ("val", "test", "fulltest"):
        assert trials[f"{split}_experts"].between(1.0, 3.0).all()
    assert (trials["test_acc"] == trials["test_acc_routed"]).all()
    epochs = pd.read_parquet(tmp_path / "res" / "router" / "epochs.parquet")
    assert epochs["test_experts"].notna().all()


def test_the_original_comparison_runs_on_cifar100_first(tmp_path):
    """paper.yaml, crt.yaml and gml.yaml compare on CIFAR-100-LT first, as the original project
    did; the CPU commands cut the axis to CIFAR-10; a smoke run of paper.yaml reads generated
    CIFAR-100 files (gml.yaml and crt.yaml run the same trainable on the same bases)."""
    from cifar_files import make_cifar100

    for space in ("search_spaces/paper.yaml", "search_spaces/crt.yaml", "search_spaces/gml.yaml"):
        plan = CliRunner().invoke(main, ["sweep", space, "--dry-run"])
        cells = [line for line in plan.output.splitlines() if line.startswith("  cell-")]
        assert plan.exit_code == 0 and "data.dataset=cifar100," in cells[0], plan.output
        assert any("data.dataset=cifar10," in c for c in cells)
        cut = CliRunner().invoke(main, ["sweep", space, "--dry-run",
                                        "--set", "grid.data.dataset=[cifar10]"])
        assert cut.exit_code == 0 and "cifar100" not in cut.output.split("grid cells:")[1]
    name, space = "paper", "search_spaces/paper.yaml"
    make_cifar100(tmp_path / "data", per_class=10, test_per_class=4)
    res = CliRunner().invoke(main, ["sweep", space, "--smoke", "--data-root",
                                    str(tmp_path / "data"), "--storage", str(tmp_path / "res"),
                                    "--no-dashboard", "--set", "train.batch_size=32",
                                    "--set", "train.eval_batch_size=256"])
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / "res" / name / "trials.parquet")
    assert len(trials) == 2 and set(trials.status) == {"completed"}
    assert set(trials["dataset"]) == {"cifar100"} and trials["test_acc_old"].notna().all()
