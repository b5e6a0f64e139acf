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
