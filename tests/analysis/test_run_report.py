"""lt-ray analyze on one run folder (lt-ray train --out): its metrics, curves, per-class."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import tiny_overrides
from lt_ray.analysis import analyze
from lt_ray.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ce"
    res = CliRunner().invoke(main, ["train", *tiny_overrides(), "--set", "train.epochs=3",
                                    "--set", "train.eval_every=2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_a_run_folder_gets_its_metrics_curves_and_per_class_figure(run, tmp_path):
    res = CliRunner().invoke(main, ["analyze", str(run), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith(f"run report, 3 figure(s) -> {tmp_path}/report.md, "
                                       "report.html")
    doc = json.loads((run / "metrics.json").read_text())
    table = pd.read_csv(tmp_path / "metrics.csv").set_index("split")
    assert table.loc["test half", "acc"] == pytest.approx(100 * doc["test_acc"], abs=1e-4)
    assert table.loc["fulltest", "hm"] == pytest.approx(100 * doc["fulltest_hm"], abs=1e-4)
    for name in ("curves", "learning_curves", "per_class"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
    md = (tmp_path / "report.md").read_text()
    assert "## Learning curves" in md and "figures/curves.png" in md
    assert [r["epoch"] for r in doc["history"]] == [1, 2, 3]  # evaluated at 2 and 3 only


def test_outputs_of_a_plug_in_run_are_rows_and_a_run_goes_alone(run, tmp_path):
    doc = json.loads((run / "metrics.json").read_text())
    gml = tmp_path / "gml"
    gml.mkdir()
    (gml / "config.yaml").write_text("method: {name: gml}\n")
    for output, shift in (("old", 0.0), ("new", 0.1)):
        doc.update({f"test_acc_{output}": 0.3 + shift})
        doc["per_class_recall"][f"test/{output}"] = doc["per_class_recall"]["test"]
    (gml / "metrics.json").write_text(json.dumps(doc))
    report = analyze(str(gml), out=str(tmp_path / "out"))
    table = pd.read_csv(tmp_path / "out" / "metrics.csv", keep_default_na=False)
    rows = table[table["split"] == "test half"].set_index("output")
    assert rows.loc["new", "acc"] == pytest.approx(40.0) and rows.loc["old", "acc"] == 30.0
    assert report.layout == "run"
    res = CliRunner().invoke(main, ["analyze", str(gml), str(run)])
    assert res.exit_code == 2 and "give one run folder alone" in res.output
