"""lt-ray analyze on hand-made study folders (write_study + study.json; no Ray)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from lt_ray.analysis import analyze, pareto_mask
from lt_ray.analysis.search import infer_distribution, param_importances
from lt_ray.cli import main
from lt_ray.errors import LTRayError
from lt_ray.methods import outputs_declaration
from lt_ray.metrics import EVAL_SPLITS, METRICS
from lt_ray.results import TrialRecord, read_study, write_study

PROV = {"lt_ray_version": "0.1.0", "git_sha": "0123456789abcdef", "git_dirty": False,
        "torch_version": "2.14.1", "ray_version": "2.60.0", "optuna_version": "5.0.0",
        "device": "cuda:0", "gpu_name": "NVIDIA H100", "hostname": "node-7",
        "resources_cpu": 1.0, "resources_gpu": 0.25}
CLASSES = ["airplane", "cat", "deer", "truck"]
COUNTS = [500, 120, 30, 5]  # many, many, medium, few
TABLE_METRICS = ("acc", "gm", "hm", "lr", "many", "medium", "few")
GML_OUTPUTS = ("old", "new", "ens")


def _final(base: float, outputs: tuple[str, ...] = ()) -> dict[str, float]:
    """Distinct metric values per split/metric(/output), all in (0, 1)."""
    out = {}
    for s, split in enumerate(EVAL_SPLITS):
        for m, metric in enumerate(METRICS):
            out[f"{split}_{metric}"] = round(base + 0.01 * s + 0.002 * m, 6)
            for o, output in enumerate(outputs):
                out[f"{split}_{metric}_{output}"] = round(base - 0.05 * (o + 1) + 0.002 * m, 6)
    return out


def record(study: str, cell: str, tid: str, *, status: str = "completed", base: float = 0.5,
           hp: dict | None = None, repeat_of: str | None = None, started: float = 0.0,
           seed: int = 0, method: str = "ce", outputs: tuple[str, ...] = ()) -> TrialRecord:
    if status == "failed":
        return TrialRecord(study=study, cell=cell, trial_id=tid, status="failed",
                           error="RuntimeError: loss is NaN at epoch 3\ntraceback...",
                           config={"method": {"name": method}, "seed": seed},
                           provenance=PROV, search_params=hp or {}, repeat_of=repeat_of)
    final = {**_final(base, outputs), "started_at": started, "ended_at": started + 10.0,
             "wall_time_s": 10.0}
    history = [{"epoch": e, "learning_rate": 0.1 / e, "train_loss": 2.0 / e,
                **{k: v * e / 3 for k, v in _final(base, outputs).items()
                   if k.startswith(("val_", "test_"))}} for e in (1, 2, 3)]
    recalls = [0.9, 0.7, 0.5 * base, 0.2 * base]
    per_class = {split: recalls for split in EVAL_SPLITS}
    for i, output in enumerate(outputs):
        per_class[f"test/{output}"] = [r * (1 - 0.1 * i) for r in recalls]
    return TrialRecord(
        study=study, cell=cell, trial_id=tid, status=status,
        config={"method": {"name": method}, "data": {"dataset": "cifar10", "imb_factor": 100},
                "seed": seed, "optim": {"lr": (hp or {}).get("optim.lr", 0.1)}},
        final=final, history=history, per_class=per_class, class_names=CLASSES,
        train_class_counts=COUNTS, provenance=PROV, search_params=hp or {}, repeat_of=repeat_of)


def write(folder: Path, records: list[TrialRecord], name: str, cells: list[str],
          metric: list[str], mode: list[str]) -> Path:
    write_study(records, folder)
    (folder / "study.json").write_text(json.dumps({
        "name": name, "cells": [{"id": f"cell-{i:02d}", "index": i, "values": {}}
                                for i, _ in enumerate(cells)],
        "metric": metric, "mode": mode, "base": {}, "spec": {}, "provenance": PROV,
        "outputs": outputs_declaration({r.config["method"]["name"] for r in records})}))
    return folder


def alpha_records() -> list[TrialRecord]:
    """Two cells, 5 searched trials each (+ failed, early-stopped); ce's best has 3 repeats."""
    recs = []
    for c, method in enumerate(("ce", "bsce")):
        cell = f"method.name={method}"
        for i, base in enumerate((0.40, 0.62, 0.55, 0.47, 0.51)):
            hp = {"optim.lr": [0.01, 0.2, 0.05, 0.1, 0.02][i],
                  "optim.weight_decay": [1e-4, 5e-4, 2e-4, 1e-3, 3e-4][i],
                  "method.loss": ["ce", "focal", "ce", "focal", "ce"][i]}
            recs.append(record("alpha", cell, f"{method}_{i}", base=base + 0.05 * c, hp=hp,
                               started=100.0 * i + c, method=method))
        recs.append(record("alpha", cell, f"{method}_f", status="failed", method=method))
        recs.append(record("alpha", cell, f"{method}_x", status="early_stopped", base=0.9,
                           started=1000.0, method=method))  # best val but not completed
    for k, base in enumerate((0.58, 0.60, 0.65)):  # repeats of the ce winner ce_1
        recs.append(record("alpha", "method.name=ce", f"ce_1_r{k}", base=base, seed=k + 1,
                           repeat_of="ce_1", started=2000.0 + k, hp={"optim.lr": 0.2}))
    recs.append(record("alpha", "method.name=ce", "ce_1_rf", status="failed", repeat_of="ce_1"))
    return recs


def gml_records() -> list[TrialRecord]:
    """One cell, GML outputs old/new/ens, two objectives (val_hm, val_acc)."""
    bases = (0.50, 0.58, 0.44, 0.53)
    return [record("gmlstudy", "", f"g{i}", base=b, method="gml", outputs=GML_OUTPUTS,
                   hp={"method.args.t1": 0.5 + i, "optim.lr": 0.01 * (i + 1)}, started=i)
            for i, b in enumerate(bases)]


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("studies")
    return {
        "alpha": write(root / "alpha", alpha_records(), "alpha",
                       ["method.name=ce", "method.name=bsce"], ["val_hm"], ["max"]),
        "gml": write(root / "gml", gml_records(), "gmlstudy", [""], ["val_hm", "val_acc"],
                     ["max", "max"]),
        "dead": write(root / "dead", [record("dead", "", f"d{i}", status="failed")
                                      for i in range(3)], "dead", [""], ["val_hm"], ["max"]),
    }


@pytest.fixture(scope="module")
def report(studies, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return analyze([studies["alpha"], studies["gml"]], out=out)


def trials_of(folder: Path) -> pd.DataFrame:
    return read_study(folder).trials.set_index("trial_id")


# --- the comparison table ------------------------------------------------------------------


def test_two_studies_give_one_table_with_one_row_per_group_and_output(report):
    t = report.table
    assert sorted(set(t["study"])) == ["alpha", "gmlstudy"]
    assert t[t.study == "alpha"].set_index("cell")["trial_id"].to_dict() == {
        "method.name=bsce": "bsce_1", "method.name=ce": "ce_1"}  # completed search trials only
    assert (t["selected_on"] == "val_hm").all()
    out = Path(report.out)
    for name in ("comparison.md", "comparison.csv", "comparison.tex"):
        assert (out / name).stat().st_size > 0
    csv = pd.read_csv(out / "comparison.csv", keep_default_na=False)
    assert len(csv) == len(t) == 2 + 3


def test_single_values_equal_the_parquet_times_100(report, studies):
    trials = trials_of(studies["alpha"])
    row = report.table.set_index("trial_id").loc["bsce_1"]
    assert row["n"] == 1 and row["values_from"] == "selected trial"
    for split in ("test", "fulltest"):
        for metric in TABLE_METRICS:
            assert row[f"{split}_{metric}_pct"] == pytest.approx(
                100 * trials.loc["bsce_1", f"{split}_{metric}"])
            assert np.isnan(row[f"{split}_{metric}_pct_std"])
    assert row["selected_value_pct"] == pytest.approx(100 * trials.loc["bsce_1", "val_hm"])


def test_repeats_give_mean_and_std_of_the_repeat_rows_only(report, studies):
    trials = read_study(studies["alpha"]).trials
    repeats = trials[(trials.repeat_of == "ce_1") & (trials.status == "completed")]
    assert len(repeats) == 3
    row = report.table.set_index("trial_id").loc["ce_1"]
    assert row["n"] == 3 and row["values_from"] == "seed repeats"
    for split in ("test", "fulltest"):
        for metric in TABLE_METRICS:
            col = f"{split}_{metric}"
            assert row[f"{col}_pct"] == pytest.approx(100 * repeats[col].mean())
            assert row[f"{col}_pct_std"] == pytest.approx(100 * repeats[col].std())
    md = (Path(report.out) / "comparison.md").read_text()
    mean, std = 100 * repeats["test_acc"].mean(), 100 * repeats["test_acc"].std()
    assert f"{mean:.2f} ± {std:.2f}" in md


def test_gml_old_new_ens_side_by_side(report, studies):
    trials = trials_of(studies["gml"])
    rows = report.table[report.table.study == "gmlstudy"]
    assert rows["output"].tolist() == ["old", "new", "ens"]
    assert set(rows["trial_id"]) == {"g1"}  # best val_hm
    for _, row in rows.iterrows():
        for metric in TABLE_METRICS:
            assert row[f"test_{metric}_pct"] == pytest.approx(
                100 * trials.loc["g1", f"test_{metric}_{row['output']}"])
    assert (report.table[report.table.study == "alpha"]["output"] == "").all()


def test_markdown_tex_and_csv_label_fulltest_and_the_selection(report):
    out = Path(report.out)
    md = (out / "comparison.md").read_text()
    header = md.splitlines()[2]
    assert "| Acc |" in header and "fulltest Acc" in header and "selected on" in header
    assert "val half drove the selection" in md
    body = [line for line in md.splitlines() if line.startswith("| alpha")]
    assert len(body) == 2 and all("val_hm" in line for line in body)
    tex = (out / "comparison.tex").read_text()
    assert "\\begin{tabular}" in tex and "val half drove the selection" in tex
    assert "selected on" in tex and "method.name=ce" in tex
    csv = pd.read_csv(out / "comparison.csv")
    assert {"test_acc_pct", "test_acc_pct_std", "fulltest_hm_pct", "selected_on", "n"} <= set(
        csv.columns)


def test_group_by_other_columns_and_select(studies, tmp_path):
    rep = analyze(studies["alpha"], out=tmp_path / "a", group_by="method", select="val_acc",
                  formats="csv")
    assert rep.table.set_index("method")["trial_id"].to_dict() == {"bsce": "bsce_1",
                                                                   "ce": "ce_1"}
    assert (rep.table["selected_on"] == "val_acc").all()
    assert sorted(p.name for p in (tmp_path / "a").glob("comparison.*")) == ["comparison.csv"]


# --- figures and reports -------------------------------------------------------------------


def test_every_figure_is_written_png_and_svg_with_axis_labels(report):
    out = Path(report.out)
    names = {Path(f).stem for f in report.figures}
    prefixes = {n.split("_")[0] for n in names}
    assert {"per", "learning", "search", "pareto", "importance"} <= prefixes
    assert len([n for n in names if n.startswith("per_class_")]) == 3
    assert {"search_alpha", "search_gmlstudy", "pareto_gmlstudy", "importance_alpha",
            "learning_curves"} <= names
    for name in names:
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = (out / "figures" / f"{name}.svg").read_text()
        assert "<svg" in svg
    per_class = next(n for n in names if n.startswith("per_class_"))
    svg = (out / "figures" / f"{per_class}.svg").read_text()
    assert "test recall (%)" in svg and "training images per class (log scale)" in svg
    assert "head → tail" in svg
    assert "epoch" in (out / "figures" / "learning_curves.svg").read_text()
    assert "val_hm (%)" in (out / "figures" / "search_alpha.svg").read_text()
    pareto = (out / "figures" / "pareto_gmlstudy.svg").read_text()
    assert "val_hm (%, max)" in pareto and "val_acc (%, max)" in pareto
    gml = [n for n in names if n.startswith("per_class_") and "gmlstudy" in n]
    svg = (out / "figures" / f"{gml[0]}.svg").read_text()
    assert "old head" in svg and "new head" in svg and "ensemble" in svg


def test_report_md_references_every_figure(report):
    md = (Path(report.out) / "report.md").read_text()
    links = set(re.findall(r"\]\((figures/[^)]+)\)", md))
    assert {f for f in report.figures} == links
    for section in ("## How the trials were selected", "## Comparison (%)", "## Per-class",
                    "## Learning curves", "## Search", "## Provenance"):
        assert section in md
    assert "0123456789ab" in md and "NVIDIA H100" in md and "node-7" in md
    assert "2.14.1" in md and "2.60.0" in md
    assert "ce_1" in md  # the table


def test_a_report_written_again_leaves_only_its_own_figures(studies, tmp_path):
    out = tmp_path / "rep"
    first = analyze([studies["alpha"], studies["gml"]], out=out, formats="csv")
    figures = out / "figures"
    (figures / "notes.txt").write_text("mine")  # not a figure: kept
    second = analyze([studies["alpha"]], out=out, formats="csv")
    assert set(second.figures) < set(first.figures)
    assert {f"figures/{p.name}" for p in figures.glob("*.*") if p.suffix != ".txt"} == set(
        second.figures)
    assert (figures / "notes.txt").read_text() == "mine"


def test_report_html_is_self_contained(report):
    page = (Path(report.out) / "report.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert len(sources) == len(report.figures) // 2
    assert "<link" not in page and "<script" not in page and "url(" not in page
    assert "<table" in page and "Provenance" in page


def test_search_views_pareto_and_importance_notes(report):
    md = (Path(report.out) / "report.md").read_text()
    # gml: 4 trials, 2 varying params -> importances; front over val_hm, val_acc
    assert "importance_gmlstudy" in md
    assert "Non-dominated trials" in md


# --- helpers -------------------------------------------------------------------------------


def test_pareto_front_of_a_hand_made_set():
    values = pd.DataFrame({"a": [1.0, 2.0, 3.0, 2.0, 1.0, np.nan, 3.0],
                           "b": [3.0, 2.0, 1.0, 1.0, 1.0, 9.0, 1.0]})
    assert pareto_mask(values, ["max", "max"]).tolist() == [True, True, True, False, False,
                                                            False, True]  # ties kept
    assert pareto_mask(values, ["min", "min"]).tolist() == [False, False, False, False, True,
                                                            False, False]  # (1, 1) wins
    assert pareto_mask(values, ["max", "min"]).tolist() == [False, False, True, False, False,
                                                            False, True]


def test_distributions_and_importance_skip(studies):
    assert infer_distribution(pd.Series([0.001, 0.1])).log
    assert not infer_distribution(pd.Series([0.5, 2.0])).log
    assert type(infer_distribution(pd.Series([1, 5], dtype="Int64"))).__name__ == (
        "IntDistribution")
    assert infer_distribution(pd.Series(["ce", "focal", None])).choices == ("ce", "focal")
    assert infer_distribution(pd.Series([True, False], dtype="boolean")).choices == (
        False, True)
    trials = read_study(studies["alpha"]).trials
    done = trials[(trials.status == "completed") & trials.repeat_of.isna()]
    few, why = param_importances(done.head(3), "val_hm", "max")
    assert few is None and "at least 4" in why
    imp, _ = param_importances(done[done.cell == "method.name=ce"], "val_hm", "max")
    assert imp is not None and set(imp) == {"optim.lr", "optim.weight_decay", "method.loss"}
    assert sum(imp.values()) == pytest.approx(1.0)


# --- bad input and empty studies -----------------------------------------------------------


def run_cli(*args: str):
    return CliRunner().invoke(main, ["analyze", *args])


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


@pytest.fixture
def other_version(studies, tmp_path) -> Path:
    folder = tmp_path / "v1"
    write(folder, alpha_records()[:2], "alpha", ["method.name=ce"], ["val_hm"], ["max"])
    table = pq.read_table(folder / "trials.parquet")
    pq.write_table(table.replace_schema_metadata({b"lt_ray.results.format": b"1"}),
                   folder / "trials.parquet")
    return folder


@pytest.mark.parametrize("case, args, message", [
    ("empty folder", ["{empty}"], "no study results"),
    ("other version", ["{v1}"], "results format '1'; this lt-ray reads format 2"),
    ("select", ["{alpha}", "--select", "val_hmm"], "available: val_acc, val_few"),
    ("select on test", ["{alpha}", "--select", "test_hm"], "test-set selection"),
    ("group-by", ["{alpha}", "--group-by", "method,imb_factr"], "did you mean imb_factor"),
    ("format", ["{alpha}", "--format", "md,xlsx"], "unknown table format(s) 'xlsx'"),
    ("uri without out", ["s3://bucket/prefix/alpha"], "--out is required"),
])
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(studies, other_version,
                                                               tmp_path, case, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    paths = {"empty": empty, "v1": other_version, "alpha": studies["alpha"]}
    argv = [a.format(**paths) for a in args]
    before = {p: sorted(x.name for x in p.iterdir()) for p in paths.values()}
    result = run_cli(*argv, *(["--out", str(out)] if case != "uri without out" else []))
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()
    assert {p: sorted(x.name for x in p.iterdir()) for p in paths.values()} == before


def test_library_raises_ltrayerror_for_bad_input(studies, tmp_path):
    with pytest.raises(LTRayError, match="no validation metric 'acc'"):
        analyze(studies["alpha"], out=tmp_path / "o", select="acc")
    assert not (tmp_path / "o").exists()


def test_all_failed_study_gets_a_report_that_says_so(studies):
    result = run_cli(str(studies["dead"]))
    assert result.exit_code == 0, result.output
    out = studies["dead"] / "analysis"  # the default output folder
    md = (out / "report.md").read_text()
    assert "Study dead has no completed trial (3 trials: 3 failed)" in md
    assert "loss is NaN at epoch 3" in md
    assert "comparison table is empty" in md
    assert (out / "report.html").is_file() and (out / "comparison.csv").is_file()
    assert "long table of 0 selected group(s)" in result.output


def test_help_lists_the_options():
    result = run_cli("--help")
    assert result.exit_code == 0
    for option in ("--out", "--select", "--group-by", "--format"):
        assert option in result.output


def test_study_and_report_on_s3(s3, studies):
    from lt_ray import storage

    study = s3.uri("studies/gml")
    write_study(gml_records(), study)
    storage.write_text(storage.join(study, "study.json"),
                       (studies["gml"] / "study.json").read_text())
    out = s3.uri("reports/gml")
    rep = analyze(study, out=out, formats="csv")
    assert rep.out == out and rep.table["output"].tolist() == ["old", "new", "ens"]
    md = storage.read_text(storage.join(out, "report.md"))
    assert "figures/learning_curves.png" in md
    assert storage.read_bytes(storage.join(out, "figures", "learning_curves.png"))[:4] == (
        b"\x89PNG")
    assert storage.is_file(storage.join(out, "comparison.csv"))


def _refused(res, *needles):
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_study_that_selects_on_test_metrics_is_refused(tmp_path):
    """A study.json whose objective is a test metric would make analyze select on the test
    split; the sweep never writes one, analyze refuses it (unless --select names a val
    metric)."""
    study = write(tmp_path / "s", alpha_records(), "alpha", ["a", "b"], ["test_acc"], ["max"])
    out = tmp_path / "report"
    _refused(CliRunner().invoke(main, ["analyze", str(study), "--out", str(out)]),
             "selects on test_acc", "test-set selection")
    assert not out.exists()
    res = CliRunner().invoke(main, ["analyze", str(study), "--out", str(out),
                                    "--select", "val_acc"])
    assert res.exit_code == 0, res.output


def test_a_study_file_of_another_format_version_is_refused(tmp_path):
    study = write(tmp_path / "s", alpha_records(), "alpha", ["a", "b"], ["val_acc"], ["max"])
    meta = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**meta, "format_version": 99}))
    out = tmp_path / "report"
    _refused(CliRunner().invoke(main, ["analyze", str(study), "--out", str(out)]),
             "format version 99")
    assert not out.exists()


def test_a_report_folder_inside_a_file_is_refused(tmp_path):
    study = write(tmp_path / "s", alpha_records(), "alpha", ["a", "b"], ["val_acc"], ["max"])
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _refused(CliRunner().invoke(main, ["analyze", str(study), "--out", str(a_file / "sub")]),
             "which is a file")


def test_a_refused_study_exits_cleanly_every_time(tmp_path):
    """A Parquet file without lt-ray's format metadata is refused with exit 2, every time: the
    Arrow table the failed read held used to outlive the exception and be destroyed during
    interpreter shutdown after torch's threads (about half the runs aborted, exit 134)."""
    import subprocess
    import sys

    import pyarrow as pa

    study = tmp_path / "s"
    study.mkdir()
    table = pa.table({"study": ["s"], "trial_id": ["t1"], "status": ["completed"]})
    for name in ("trials.parquet", "epochs.parquet", "per_class.parquet"):
        pq.write_table(table, study / name)
    for _ in range(8):
        res = subprocess.run([sys.executable, "-m", "lt_ray.cli", "analyze", str(study), "--out",
                              str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, (res.returncode, res.stderr)
        assert res.stderr.strip().splitlines() == [res.stderr.strip()]
        assert "no lt-ray results format version" in res.stderr
