"""The paper layout of lt-ray analyze on hand-made studies (write_study + a study.json that
declares its cells' rows as the sweep driver writes it; no Ray): a GML study on two bases
(ensemble none/prob) with seed repeats, a cRT study on the same CE base, merged into one table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from lt_ray.analysis import analyze
from lt_ray.analysis import paper as P
from lt_ray.cli import main
from lt_ray.errors import LTRayError
from lt_ray.methods import FAMILIES, outputs_declaration
from lt_ray.metrics import EVAL_SPLITS, METRICS
from lt_ray.results import TrialRecord, write_study

SIMPLE, EARLIER, PLUG_IN = FAMILIES
CLASSES, COUNTS = ["a", "b", "c", "d"], [500, 120, 30, 5]
# the base models' test metrics by seed (the old head: the same in every cell of that base)
BASES = {"ce": {0: 0.40, 1: 0.44, 2: 0.48}, "ldam_drw": {0: 0.60, 1: 0.62, 2: 0.64}}


def _metrics(value: float, output: str = "") -> dict[str, float]:
    suffix = f"_{output}" if output else ""
    return {f"{split}_{metric}{suffix}": value + 0.001 * m
            for split in EVAL_SPLITS for m, metric in enumerate(METRICS)}


def gml_trial(study: str, cell: str, tid: str, base: str, seed: int, new: float, ens: float,
              *, repeat_of: str | None = None, loss: str = "gml") -> TrialRecord:
    """A GML trial: old = its base (by seed), new and ens as given; the plain metrics (what
    the selection reads) are ens when the cell ensembles, else new."""
    old = BASES[base][seed]
    plain = ens if "ensemble=prob" in cell else new
    final = {**_metrics(plain), **_metrics(old, "old"), **_metrics(new, "new"),
             **_metrics(ens, "ens")}
    return TrialRecord(
        study=study, cell=cell, trial_id=tid, status="completed",
        config={"method": {"name": "gml", "loss": loss}, "seed": seed,
                "data": {"dataset": "cifar10", "imb_factor": 100},
                "pretrained": {"method": {"name": base}}},
        final=final, history=[{"epoch": 30, **{k: v for k, v in final.items()
                                               if k.startswith(("val_", "test_"))}}],
        per_class={**{s: [0.9, 0.6, 0.3, 0.1] for s in EVAL_SPLITS},
                   **{f"test/{o}": [0.9, 0.6, 0.3, 0.1] for o in ("old", "new", "ens")}},
        class_names=CLASSES, train_class_counts=COUNTS, search_params={"optim.lr": 0.1},
        repeat_of=repeat_of)


def rows_of(base: str, loss: str = "gml") -> dict:
    title = {"ce": "CE", "ldam_drw": "LDAM-DRW"}[base]
    family = SIMPLE if base == "ce" else EARLIER
    plug = "GML" if loss == "gml" else "BSCE re-train"
    return {"old": {"name": title, "family": family},
            "new": {"name": f"{title} + {plug}", "family": PLUG_IN},
            "ens": {"name": f"{title} + {plug} (ensemble)", "family": PLUG_IN}}


def write(folder: Path, name: str, records: list[TrialRecord], cells: dict[str, dict],
          stages: dict[str, list] | None = None) -> Path:
    write_study(records, folder)
    (folder / "study.json").write_text(json.dumps({
        "format_version": 1, "name": name, "metric": ["val_hm"], "mode": ["max"],
        "base": {}, "spec": {}, "provenance": {},
        "cells": [{"id": f"cell-{i:02d}", "index": i, "values": {}, "label": label,
                   "rows": rows, "stages": (stages or {}).get(label, []),
                   "primary": "ens" if "ensemble=prob" in label else "new"}
                  for i, (label, rows) in enumerate(cells.items())],
        "outputs": outputs_declaration(["gml"]), "families": list(FAMILIES),
        "artifacts": str(folder.parent / "artifacts")}))
    return folder


def gml_study(folder: Path) -> Path:
    """Cells (ce, ldam_drw) x (none, prob), two search trials each; the winner has repeats
    with seeds 1 and 2 (so the old head's mean is over bases 1 and 2)."""
    records, cells, stages = [], {}, {}
    for base in BASES:
        for mode in ("none", "prob"):
            cell = f"pretrained.method.name={base},method.args.ensemble={mode}"
            cells[cell] = rows_of(base)
            stages[cell] = [{"seed": s, "hash": f"{base}{s}", "method": base,
                             "title": rows_of(base)["old"]["name"], "epochs": 30}
                            for s in (0, 1, 2)]
            lift = 0.2 if mode == "none" else 0.25
            tag = f"{base}_{mode}"
            old0 = BASES[base][0]
            records += [gml_trial("gml", cell, f"{tag}_a", base, 0, old0 + lift,
                                  old0 + lift + 0.01),
                        gml_trial("gml", cell, f"{tag}_b", base, 0, old0 + lift - 0.1,
                                  old0 + lift - 0.09)]
            for seed in (1, 2):  # repeats of the winner (the a trial)
                old = BASES[base][seed]
                records.append(gml_trial("gml", cell, f"{tag}_r{seed}", base, seed, old + lift,
                                         old + lift + 0.01, repeat_of=f"{tag}_a"))
    return write(folder, "gml", records, cells, stages)


def crt_study(folder: Path, ce_shift: float = 0.0) -> Path:
    """CE + BSCE re-train on the same CE bases (``ce_shift``: a CE base that differs)."""
    cell = "pretrained.method.name=ce"
    records = [gml_trial("crt", cell, "c_a", "ce", 0, 0.55, 0.5, loss="bsce")]
    for seed in (1, 2):
        records.append(gml_trial("crt", cell, f"c_r{seed}", "ce", seed, 0.56 + 0.02 * seed,
                                 0.5, repeat_of="c_a", loss="bsce"))
    if ce_shift:
        for r in records:
            for k in [k for k in r.final if k.endswith("_old")]:
                r.final[k] += ce_shift
    return write(folder, "crt", records, {cell: rows_of("ce", "bsce")})


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paper")
    artifacts = root / "artifacts"
    for base, seeds in BASES.items():
        for seed, value in seeds.items():
            folder = artifacts / f"{base}{seed}"
            folder.mkdir(parents=True)
            history = [{"epoch": e, "train_loss": 2.0 / e, "learning_rate": 0.1,
                        **{f"test_{m}": value * e / 30 for m in ("acc", "gm", "hm", "lr")}}
                       for e in (10, 20, 30)]
            (folder / "metrics.json").write_text(json.dumps({"history": history}))
    return {"gml": gml_study(root / "gml"), "crt": crt_study(root / "crt"),
            "crt_other": crt_study(root / "crt_other", ce_shift=0.05)}


@pytest.fixture(scope="module")
def report(studies, tmp_path_factory):
    return analyze([studies["gml"], studies["crt"]], out=tmp_path_factory.mktemp("out"))


def _value(text: str) -> tuple[float, float | None]:
    text = text.strip("*")
    mean, _, std = text.partition(" ± ")
    return float(mean), float(std) if std else None


def _table(out: str) -> pd.DataFrame:
    return pd.read_csv(Path(out) / "comparison.csv")


def test_rows_are_the_methods_as_a_reader_names_them_grouped_in_order(report):
    table = _table(report.out)
    rows = list(dict.fromkeys(zip(table["family"], table["row"], strict=True)))
    assert rows == [
        (SIMPLE, "CE"), (EARLIER, "LDAM-DRW"),
        (PLUG_IN, "CE + GML"), (PLUG_IN, "CE + GML (ensemble)"), (PLUG_IN, "LDAM-DRW + GML"),
        (PLUG_IN, "LDAM-DRW + GML (ensemble)"), (PLUG_IN, "CE + BSCE re-train")]
    # a cell shows its base and the output it selected on; its other outputs (not tuned for:
    # the crt cell's ensemble) are in the long table only
    # the CE base came through three cells of two studies with equal values: one row
    assert (table["row"] == "CE").sum() == 1 and set(table["block"]) == {"cifar10, IF 100"}


def test_values_are_mean_and_std_over_the_seed_repeats_in_percent(report):
    table = _table(report.out).set_index("row")
    # CE (old head of the repeats): bases of seeds 1 and 2 -> 44 and 48 %
    assert table.loc["CE", "acc"] == pytest.approx(46.0)
    assert table.loc["CE", "acc_std"] == pytest.approx(pd.Series([44.0, 48.0]).std(), abs=1e-3)
    assert table.loc["CE", "n"] == 2
    # CE + GML: new = old + 20 points on seeds 1, 2; HM is metric index 2 (+0.2 points)
    assert table.loc["CE + GML", "hm"] == pytest.approx(66.2)
    assert table.loc["CE + GML (ensemble)", "lr"] == pytest.approx(46.0 + 25 + 1 + 0.3)
    assert table.loc["CE + BSCE re-train", "acc"] == pytest.approx(100 * (0.58 + 0.60) / 2)


def test_markdown_has_group_lines_bold_best_and_the_footnote(report):
    text = (Path(report.out) / "comparison.md").read_text()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    assert header.split(" | ")[1:6] == ["cifar10, IF 100: Acc", "cifar10, IF 100: GM",
                                        "cifar10, IF 100: HM", "cifar10, IF 100: LR",
                                        "cifar10, IF 100: n |"]
    assert "| *simple methods* |" in text and "| *GML plug-in* |" in text
    best = [line for line in lines if "**" in line]
    assert len(best) == 1 and best[0].startswith("| LDAM-DRW + GML (ensemble) |")  # 89+ %
    assert _value(best[0].split(" | ")[1]) == pytest.approx((100 * (0.63 + 0.26), 1.414),
                                                            abs=1e-2)
    assert "Test half of the official test set" in text and "by val_hm" in text
    assert report.markdown == text  # what the CLI prints


def test_latex_is_well_formed(report):
    tex = (Path(report.out) / "comparison.tex").read_text()
    assert tex.count("{") == tex.count("}")
    for env in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    body = tex[tex.index("\\toprule"):tex.index("\\bottomrule")]
    rows = [line for line in body.splitlines() if line.endswith("\\\\")]
    for row in rows:
        if "\\multicolumn" in row and "&" not in row:
            assert re.search(rf"\\multicolumn\{{{len(spec)}\}}", row), row  # a group line
        elif not row.startswith(" &"):
            assert row.count("&") == len(spec) - 1, row
    assert "\\textbf{" in tex and "$\\pm$" in tex and "\\emph{GML plug-in}" in tex
    assert "CE + GML (ensemble)" in tex


def test_report_html_fits_shows_the_table_figure_and_base_curves(report):
    html = (Path(report.out) / "report.html").read_text()
    assert "overflow-x" not in html and "<strong>" in html and 'class="group"' in html
    assert html.index("Comparison (%)") < html.index("Appendix: the long table")
    figures = set(report.figures)
    assert {"figures/comparison.png", "figures/base_curves.png"} <= figures
    md = (Path(report.out) / "report.md").read_text()
    assert "figures/base_curves.png" in md and "figures/comparison.png" in md
    assert (Path(report.out) / "comparison_long.md").is_file()


def test_the_long_layout_stays(studies, tmp_path):
    long = analyze([studies["gml"], studies["crt"]], out=tmp_path, layout="long")
    text = (tmp_path / "comparison.md").read_text()
    assert "fulltest Acc" in text and "pretrained.method.name=ce" in text
    assert len(long.table) == 5 * 3  # 5 cells x old/new/ens
    assert not (tmp_path / "comparison_long.md").exists()


def test_rows_that_share_a_name_but_not_their_values_keep_both(studies, tmp_path):
    analyze([studies["gml"], studies["crt_other"]], out=tmp_path)
    ce = [r for r in _table(str(tmp_path))["row"] if r.startswith("CE (")]
    assert ce == ["CE (gml: pretrained.method.name=ce,method.args.ensemble=none)",
                  "CE (crt: pretrained.method.name=ce)"]


def test_metrics_choose_the_columns_and_bad_ones_are_refused(studies, tmp_path):
    analyze([studies["gml"]], out=tmp_path, metrics="hm,few")
    assert "cifar10, IF 100: Few" in (tmp_path / "comparison.md").read_text()
    with pytest.raises(LTRayError, match="--metrics: top1"):
        P.parse_metrics("hm,top1")


def test_paper_layout_of_a_study_without_row_names_is_one_error_line(studies, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("trials.parquet", "epochs.parquet", "per_class.parquet"):
        (old / name).write_bytes((studies["crt"] / name).read_bytes())
    meta = json.loads((studies["crt"] / "study.json").read_text())
    for cell in meta["cells"]:
        del cell["rows"]
    (old / "study.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(main, ["analyze", str(old), "--layout", "paper", "--out",
                                    str(tmp_path / "o")])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "declares no row names" in res.output and "--layout long" in res.output
    assert not (tmp_path / "o").exists()
    assert CliRunner().invoke(main, ["analyze", str(old), "--out", str(tmp_path / "o2")]
                              ).exit_code == 0  # by default: the long layout
    res = CliRunner().invoke(main, ["analyze", str(old), "--metrics", "top1"])
    assert res.exit_code == 2 and "--metrics: top1" in res.output
