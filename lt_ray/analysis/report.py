"""``analyze``: study folders -> comparison tables, figures, ``report.md`` and ``report.html``
(a single run folder: its own report, :mod:`lt_ray.analysis.run_report`).

The report is built once as a list of blocks (:mod:`lt_ray.analysis.render`) and rendered as
Markdown and HTML. Everything is checked before the first file is written.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lt_ray import __version__, storage
from lt_ray.analysis import paper as P
from lt_ray.analysis import plots, search
from lt_ray.analysis import tables as T
from lt_ray.analysis.data import (
    DeclaredOutputs,
    Study,
    all_trials,
    declared_outputs,
    load_studies,
    objectives_by_study,
    parse_formats,
    parse_group_by,
)
from lt_ray.analysis.render import (
    Build,
    Heading,
    Items,
    Table,
    Text,
    figure_names,
    write_report,
)
from lt_ray.analysis.run_report import analyze_run, is_run_folder
from lt_ray.errors import LTRayError
from lt_ray.results import schema as S

TABLE_STEM = "comparison"
LONG_STEM = "comparison_long"  # the long table, next to a paper-layout comparison
LAYOUTS = ("paper", "long")
ARTIFACT_METRICS = "metrics.json"  # an artifact's result document: its history included
PAPER_CAPTION = ("Comparison of the methods: test-half metrics in % (mean ± std over the seed "
                 "repeats of each row's selected configuration).")
PAPER_FIGURE_METRICS = ("hm", "lr", "acc")
OUT_SUBDIR = "analysis"  # default output: <first study>/analysis/


@dataclass(frozen=True)
class Report:
    """What :func:`analyze` made: the numeric comparison table (values in %), the files it
    wrote (full paths or URIs), the figures (names relative to ``out``) and its notes."""

    out: str
    table: pd.DataFrame
    files: tuple[str, ...]
    figures: tuple[str, ...]
    notes: tuple[str, ...] = ()
    markdown: str = ""  # the comparison table as Markdown (what the CLI prints)
    layout: str = "long"  # paper, long, or run (the report of one run folder)


# --- entry point ---------------------------------------------------------------------------


def analyze(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
            out: str | os.PathLike[str] | None = None, select: str | None = None,
            group_by: str | Sequence[str] | None = None,
            formats: str | Sequence[str] = ("md", "csv", "tex"), layout: str | None = None,
            metrics: str | Sequence[str] | None = None) -> Report:
    """Compare the studies in ``paths`` (folders or URIs) and write the report into ``out``.

    Args:
        paths: one or more study folders/URIs; several give one table.
        out: output folder or URI (default: ``<first study>/analysis``; required for a URI).
        select: the validation metric that picks each group's best trial (default: each
            study's first objective from study.json, else ``val_hm``).
        group_by: columns of trials.parquet to group by (default: study, cell).
        formats: the comparison table's file formats, among md, csv, tex.
        layout: ``paper`` (a row per method as a reader names it, grouped; columns per
            dataset and imbalance factor) or ``long`` (a row per group and output, every
            metric); default: paper when the studies compare methods and name their rows.
        metrics: the paper layout's columns (default acc, gm, hm, lr).

    Raises:
        LTRayError: before anything is written, for a folder without study Parquet, Parquet
            of another format version, an unknown ``select`` metric, ``group_by`` column,
            format, layout or metric, a paper layout the studies cannot give, or a URI study
            without ``out``.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    locations = [os.fspath(p) for p in items]
    out_dir = _out_dir(locations, out)
    runs = [loc for loc in locations if is_run_folder(loc)]
    if runs:
        if len(locations) > 1:
            raise LTRayError(f"{runs[0]} is a run folder: give one run folder alone, or study "
                             "folders")
        written, build, _ = analyze_run(storage.normalize(locations[0]), out_dir)
        return Report(out=out_dir, table=pd.DataFrame(), files=tuple(written),
                      figures=figure_names(build), notes=tuple(build.notes), markdown="",
                      layout="run")
    fmts = parse_formats(formats)
    chosen = P.parse_metrics(metrics)
    if layout not in (None, *LAYOUTS):
        raise LTRayError(f"--layout {layout}: choose {' or '.join(LAYOUTS)}")
    studies = load_studies(locations)
    trials = all_trials(studies)
    groups = parse_group_by(group_by, trials)
    objectives = objectives_by_study(studies, select, trials, groups)

    build = Build()
    selected, missing = T.select_best(trials, groups, objectives)
    declared = declared_outputs(studies)
    table = T.comparison_table(trials, selected, groups, declared)
    display = T.display_table(table, groups)
    caption = _table_caption(objectives)
    paper = _paper_or_none(layout, group_by, studies, table, selected, chosen)
    _header(build, studies, trials)
    _selection_section(build, groups, objectives)
    if paper is not None:
        _paper_section(build, paper, missing, fmts)
    else:
        _comparison_section(build, table, display, missing, fmts, declared)
    _trials_section(build, studies)
    _per_class_section(build, studies, trials, selected, groups, declared)
    _curves_section(build, studies, selected, groups)
    _search_section(build, studies, objectives)
    _provenance_section(build, studies)
    if paper is not None:
        test_half, fulltest = _halves(display)
        build.add(Heading(2, "Appendix: the long table"), Text(
            "Every selected group (study and grid cell) and output, with the selected trial and "
            f"the seven metrics on the test half ([`{LONG_STEM}.md`]({LONG_STEM}.md) has both "
            "halves in one table):"), Table(test_half),
            Text("The same on the whole official test set (its validation half drove the "
                 "selection):"), Table(fulltest),
            *(Text(line) for line in _legends(table, declared)))

    markdown = (_table_text("md", table, display, caption, declared) if paper is None
                else P.to_markdown(paper, PAPER_CAPTION))
    files = {f"{TABLE_STEM}.{fmt}": (markdown if fmt == "md" else _paper_text(fmt, paper)
                                     if paper is not None else
                                     _table_text(fmt, table, display, caption, declared)).encode()
             for fmt in fmts}
    if paper is not None:
        files.update({f"{LONG_STEM}.{fmt}": _table_text(fmt, table, display, caption,
                                                        declared).encode() for fmt in fmts})
    title = "lt-ray analysis: " + ", ".join(s.name for s in studies)
    written = write_report(out_dir, files, build, title)
    return Report(out=out_dir, table=table, files=tuple(written), figures=figure_names(build),
                  notes=tuple(build.notes), layout="long" if paper is None else "paper",
                  markdown=markdown)


def _paper_or_none(layout: str | None, group_by: Any, studies: Sequence[Study],
                   table: pd.DataFrame, selected: pd.DataFrame,
                   metrics: Sequence[str]) -> P.PaperTable | None:
    """The paper table when the layout is (or defaults to) paper; a paper layout asked for
    but impossible is a user error."""
    if layout == "long":
        return None
    reason = None
    if group_by is not None:
        reason = "it groups by study and cell: drop --group-by"
    elif not P.can_name_rows(studies):
        reason = ("a study.json declares no row names (a study of an earlier lt-ray): resume "
                  "it once with this lt-ray (lt-ray sweep ... --resume) to refresh it")
    if reason is not None:
        if layout == "paper":
            raise LTRayError(f"--layout paper: {reason}; or use --layout long")
        return None
    paper = P.paper_table(table, selected, studies, metrics)
    if layout is None and len(paper.rows) < 2:
        return None  # one method: nothing to compare side by side
    return paper


def _halves(display: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long display table as two narrower ones: the group columns with the test-half
    metrics, and the group columns with the fulltest metrics (a page's width each)."""
    keys = [c for c in display.columns if c[0] == ""]
    labels = [c for c in keys if c[1] not in ("selected on", "trial", "n")]
    test = display[keys + [c for c in display.columns if c[0] == T.TEST_HEADER]]
    full = display[labels + [c for c in display.columns if c[0] == T.FULLTEST_HEADER]]
    return test, full


def _paper_text(fmt: str, paper: P.PaperTable) -> str:
    if fmt == "csv":
        return P.to_csv(paper)
    if fmt == "tex":
        return P.to_latex(paper, PAPER_CAPTION)
    return P.to_markdown(paper, PAPER_CAPTION)


def _paper_section(build: Build, paper: P.PaperTable, missing: Sequence[str],
                   fmts: Sequence[str]) -> None:
    build.add(Heading(2, "Comparison (%)"))
    if paper.empty:
        build.note("No group has a completed search trial to select: the comparison table is "
                   "empty (see Trials below).")
    else:
        build.add(Text(PAPER_CAPTION), Table(P.display_frame(paper), markup=True),
                  Text(paper.footnote))
        for note in paper.notes:
            build.note(note)
        shown = [m for m in PAPER_FIGURE_METRICS if m in paper.metrics] or list(
            paper.metrics[:3])
        build.figure("comparison", plots.paper_figure(paper.frame, paper.rows, paper.blocks,
                                                      shown, paper.families),
                     ", ".join(T.METRIC_LABELS[m] for m in shown) + " of every row of the "
                     "table (test half, %), grouped as the table; error bars: the std over the "
                     "seed repeats")
    if missing:
        build.add(Text("Groups without a selected trial:"), Items(tuple(missing)))
        build.notes.extend(missing)
    build.add(Text("The same table: " + ", ".join(f"[`{TABLE_STEM}.{f}`]({TABLE_STEM}.{f})"
                                                  for f in fmts) + "; the long one (every "
                   "group, output and metric) is in the appendix and in "
                   + ", ".join(f"[`{LONG_STEM}.{f}`]({LONG_STEM}.{f})" for f in fmts) + "."))


def _table_text(fmt: str, table: pd.DataFrame, display: pd.DataFrame, caption: str,
                declared: DeclaredOutputs) -> str:
    if fmt == "csv":
        return T.to_csv(table)
    if fmt == "tex":
        return T.to_latex(display, caption)
    legend = "\n\n".join(_legends(table, declared))
    return f"{caption}\n\n{T.to_markdown(display)}\n\n{legend}\n"


def _out_dir(locations: Sequence[str], out: str | os.PathLike[str] | None) -> str:
    if not locations:
        raise LTRayError("give at least one study folder or URI")
    if out is None:
        if storage.is_uri(locations[0]):
            raise LTRayError(f"--out is required when the first study is a URI "
                             f"({locations[0]}); give a folder or URI for the report")
        out_dir = storage.join(storage.normalize(locations[0]), OUT_SUBDIR)
        return storage.check_location(out_dir, "the report folder")
    return storage.check_location(out, "--out")


# --- sections ------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "all-trials"


def _table_caption(objectives: dict[str, tuple[str, str]]) -> str:
    how = ", ".join(sorted({f"{m} ({o})" for m, o in objectives.values()}))
    return (f"Best completed search trial per group, selected on {how}; test-half metrics in % "
            f"(mean ± std over the seed repeats when n > 1).")


def _legends(table: pd.DataFrame, declared: DeclaredOutputs) -> list[str]:
    lines = [
        f"*{T.FULLTEST_HEADER}*: the columns marked `fulltest` are the whole official test set "
        "(the papers' protocol); its validation half drove the selection, so they are "
        "optimistic. The test-half columns are the held-out half no search saw.",
        "`–`: an empty shot group (no class with that many training images: many > 100, "
        "medium 20–100, few < 20) or a metric the run did not report.",
    ]
    shown = set(table[T.OUTPUT])
    for method, legend in declared.legends.items():
        if shown & set(declared.by_method.get(method, ())):
            lines.append(f"`output` ({method}): {legend}.")
    return lines


def _header(build: Build, studies: Sequence[Study], trials: pd.DataFrame) -> None:
    build.add(Heading(1, "lt-ray analysis: " + ", ".join(s.name for s in studies)),
              Text(f"{len(trials)} trials from {len(studies)} study folder(s): "
                   + ", ".join(f"`{_shown(s.path)}`" for s in studies)
                   + f". Made by `lt-ray analyze` (lt-ray {__version__}) from the study's "
                   "Parquet tables; the figures are PNG with an SVG twin in `figures/`."))


def _shown(path: str) -> str:
    """A study's location as a reader can use it: relative to the working folder when it is
    below it (a committed report names no machine's path), else as it is."""
    if storage.is_uri(path):
        return path
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _selection_section(build: Build, groups: Sequence[str],
                       objectives: dict[str, tuple[str, str]]) -> None:
    how = "; ".join(f"`{m}` ({o}) in {n}" for n, (m, o) in objectives.items())
    build.add(Heading(2, "How the trials were selected"), Text(
        f"Trials are grouped by {', '.join(f'`{g}`' for g in groups)}. In each group, among the "
        f"completed search trials (seed repeats and early-stopped, failed or interrupted trials "
        f"excluded), the trial with the best validation metric is selected: {how}. The tables "
        "report its last-epoch metrics on the test half of the official test set, which the "
        "search never saw. When the selected trial has seed repeats (trials whose `repeat_of` "
        "is its id), the value is the mean ± std over those repeats, the new seeds only: the "
        "selected trial itself is left out because the selection biased it upward; `n` is the "
        "number of runs behind each value (1: the selected trial alone)."))


def _comparison_section(build: Build, table: pd.DataFrame, display: pd.DataFrame,
                        missing: Sequence[str], fmts: Sequence[str],
                        declared: DeclaredOutputs) -> None:
    build.add(Heading(2, "Comparison (%)"))
    if table.empty:
        build.note("No group has a completed search trial to select: the comparison table is "
                   "empty (see Trials below).")
    else:
        build.add(Table(display), *(Text(line) for line in _legends(table, declared)))
    if missing:
        build.add(Text("Groups without a selected trial:"), Items(tuple(missing)))
        build.notes.extend(missing)
    build.add(Text("The same table: " + ", ".join(f"[`{TABLE_STEM}.{f}`]({TABLE_STEM}.{f})"
                                                  for f in fmts) + "."))


def _trials_section(build: Build, studies: Sequence[Study]) -> None:
    rows = []
    for study in studies:
        t = study.tables.trials
        counts = t[S.STATUS].value_counts()
        rows.append({"study": study.name, "cells": str(t[S.CELL].nunique()),
                     "trials": str(len(t)),
                     **{s.replace("_", " "): str(int(counts.get(s, 0))) for s in S.STATUSES},
                     "seed repeats": str(int(t[S.REPEAT_OF].notna().sum()))})
    build.add(Heading(2, "Trials"), Table(pd.DataFrame(rows)))
    for study in studies:
        t = study.tables.trials
        if len(t) and (t[S.STATUS] == "completed").any():
            continue
        text = (f"Study {study.name} has no completed trial ({T.status_counts(t)})."
                if len(t) else f"Study {study.name} has no trial.")
        build.note(text)
        errors = t.loc[t[S.STATUS] == "failed", [S.TRIAL_ID, S.ERROR]].head(3)
        if len(errors):
            build.add(Text("First errors:"), Items(tuple(
                f"`{r[S.TRIAL_ID]}`: {_first_line(r[S.ERROR])}" for _, r in errors.iterrows())))


def _first_line(error: Any) -> str:
    if pd.isna(error) or not str(error).strip():
        return "(no message)"
    return str(error).strip().splitlines()[0][:300]


def _group_name(row: pd.Series, groups: Sequence[str]) -> str:
    return T.group_label(groups, [row[g] for g in groups])


def _per_class_section(build: Build, studies: Sequence[Study], trials: pd.DataFrame,
                       selected: pd.DataFrame, groups: Sequence[str],
                       declared: DeclaredOutputs) -> None:
    build.add(Heading(2, "Per-class recall"))
    if selected.empty:
        build.add(Text("No selected trial: nothing to plot."))
        return
    build.add(Text("Test-half recall of every class of each selected trial (bars, %), classes "
                   "sorted from head to tail by their training images (black line, log axis). "
                   "With seed repeats the bars are the mean over the repeats, the error bars "
                   "their std."))
    per_class = {s.name: s.tables.per_class for s in studies}
    for i, (_, row) in enumerate(selected.iterrows(), start=1):
        repeats = T.repeats_of(trials, row[S.STUDY], row[S.TRIAL_ID])
        ids = list(repeats[S.TRIAL_ID]) if len(repeats) else [row[S.TRIAL_ID]]
        data = _per_class_data(per_class[row[S.STUDY]], ids, T.outputs_of(row, declared))
        label = _group_name(row, groups)
        if data.empty:
            build.add(Text(f"{label}: no per-class rows for trial `{row[S.TRIAL_ID]}`."))
            continue
        runs = (f"mean ± std over {len(ids)} seed repeats" if len(repeats)
                else f"trial {row[S.TRIAL_ID]}")
        title = f"Per-class test recall: {label} ({runs}; selected on {row[T.SELECTED_ON]})"
        figure = plots.per_class_figure(data, title, declared.labels)
        build.figure(f"per_class_{i:02d}_{_slug(label)}", figure, title)


def _per_class_data(per_class: pd.DataFrame, trial_ids: list[str],
                    outputs: list[str]) -> pd.DataFrame:
    rows = per_class[per_class[S.TRIAL_ID].isin(trial_ids) & (per_class[S.SPLIT] == "test")]
    if outputs:
        rows = rows[rows[S.OUTPUT].isin(outputs)]
    else:
        rows = rows[rows[S.OUTPUT].isna()].assign(**{S.OUTPUT: ""})
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(recall_pct=100 * rows[S.RECALL])
    data = rows.groupby([S.OUTPUT, S.CLASS_INDEX], sort=False).agg(
        class_name=(S.CLASS_NAME, "first"), train_count=(S.TRAIN_COUNT, "first"),
        mean=("recall_pct", "mean"), std=("recall_pct", "std")).reset_index()
    order = data[S.OUTPUT].map({o: i for i, o in enumerate(outputs or [""])})
    return data.assign(_order=order).sort_values(["_order", S.CLASS_INDEX]).drop(
        columns="_order").reset_index(drop=True)


def _curves_section(build: Build, studies: Sequence[Study], selected: pd.DataFrame,
                    groups: Sequence[str]) -> None:
    build.add(Heading(2, "Learning curves"))
    _base_curves(build, studies)
    epochs = {s.name: s.tables.epochs for s in studies}
    curves = {}
    for _, row in selected.iterrows():
        e = epochs[row[S.STUDY]]
        part = e[e[S.TRIAL_ID] == row[S.TRIAL_ID]].sort_values(S.EPOCH)
        if len(part):
            curves[f"{_group_name(row, groups)} [{row[S.TRIAL_ID]}]"] = part
    if not curves:
        build.add(Text("No epoch rows for the selected trials: nothing to plot."))
        return
    build.figure("learning_curves", plots.learning_curves_figure(curves),
                 "Val (dashed) and test (solid) Acc, GM, HM and LR per evaluated epoch of the "
                 "selected trials (the output the config reports; a trial evaluated once is "
                 "one marker)")


def _base_curves(build: Build, studies: Sequence[Study]) -> None:
    """The stage models' own training (their artifacts' histories), one panel per model."""
    histories: dict[str, list[pd.DataFrame]] = {}
    missing: list[str] = []
    seen: set[str] = set()
    for study in studies:
        root = _artifact_root(study)
        for cell in study.meta.get("cells") or []:
            for stage in cell.get("stages") or [] if isinstance(cell, dict) else []:
                digest = str(stage.get("hash"))
                if digest in seen:
                    continue
                seen.add(digest)
                history = _artifact_history(root, digest) if root else None
                if history is None:
                    missing.append(digest)
                    continue
                title = f"{stage.get('title', stage.get('method'))} · {stage.get('epochs')} epochs"
                histories.setdefault(title, []).append(history)
    if histories:
        build.figure("base_curves", plots.base_curves_figure(histories),
                     "The stage models the studies build on (their stage artifacts), as they "
                     "trained: test-half Acc, GM, HM and LR per evaluated epoch (mean over the "
                     "seeds; band: their range) and the training loss")
    if missing:
        build.add(Text(f"{len(missing)} stage artifact(s) without a readable history (not in "
                       f"the artifact folder the study names, or of an earlier lt-ray): "
                       + ", ".join(f"`{d}`" for d in missing[:8])
                       + (" ..." if len(missing) > 8 else "")))


def _artifact_root(study: Study) -> str | None:
    """Where the study's stage artifacts are: the folder its study.json names, else
    ``<storage>/artifacts`` beside the study."""
    named = study.meta.get("artifacts")
    for root in ([named] if isinstance(named, str) and named else []) + [
            storage.join(storage.parent(study.path), "artifacts")]:
        try:
            if storage.exists(root):
                return root
        except LTRayError:
            continue
    return None


def _artifact_history(root: str, digest: str) -> pd.DataFrame | None:
    path = storage.join(root, digest, ARTIFACT_METRICS)
    try:
        if not storage.is_file(path):
            return None
        history = json.loads(storage.read_text(path)).get("history")
    except (OSError, ValueError, LTRayError):
        return None
    if not isinstance(history, list) or not history:
        return None
    return pd.DataFrame.from_records(history)


def _search_section(build: Build, studies: Sequence[Study],
                    objectives: dict[str, tuple[str, str]]) -> None:
    build.add(Heading(2, "Search"))
    for study in studies:
        t = study.tables.trials
        build.add(Heading(3, study.name))
        own = [(m, o) for m, o in study.objectives if m in t.columns]
        metric, mode = objectives[study.name]
        shown = own or ([(metric, mode)] if metric in t.columns else [])
        if not len(t) or not shown:
            build.add(Text("No trial." if not len(t) else
                           f"No objective column ({metric}) in this study: nothing to plot."))
            continue
        slug = _slug(study.name)
        build.figure(f"search_{slug}", plots.objective_figure(t, shown, study.name),
                     f"{study.name}: " + ", ".join(m for m, _ in shown)
                     + " of each search trial in start order, with the best so far per cell")
        if len(own) >= 2:
            _pareto(build, study, own, slug)
        _importance(build, study, *objectives[study.name])


def _pareto(build: Build, study: Study, objectives: Sequence[tuple[str, str]],
            slug: str) -> None:
    metrics, modes = [m for m, _ in objectives], [o for _, o in objectives]
    build.figure(f"pareto_{slug}", plots.pareto_figure(study.tables.trials, objectives,
                                                       study.name),
                 f"{study.name}: Pareto front of " + " vs ".join(metrics)
                 + " (completed search trials, one front per cell)")
    fronts = []
    for cell, part in T.search_trials(study.tables.trials).groupby(S.CELL, sort=True):
        front = part[T.pareto_mask(part[metrics], modes)][S.TRIAL_ID]
        fronts.append(f"{cell or 'all trials'}: " + (", ".join(f"`{x}`" for x in front)
                                                     or "none"))
    build.add(Text(f"Non-dominated trials on {', '.join(metrics)}, per cell:"),
              Items(tuple(fronts) or ("no completed search trial",)))


def _importance(build: Build, study: Study, metric: str, mode: str) -> None:
    done = T.search_trials(study.tables.trials)
    if metric not in done.columns:
        build.add(Text(f"Parameter importance: skipped (no {metric} column in this study)."))
        return
    results: dict[str, dict[str, float]] = {}
    hows = []
    for cell, part in done.groupby(S.CELL, sort=True):
        importances, how = search.param_importances(part, metric, mode)
        name = str(cell) or "all trials"
        if importances is None:
            build.add(Text(f"Parameter importance, {name}: skipped ({how})."))
        else:
            results[name] = importances
            hows.append(how)
    if done.empty:
        build.add(Text("Parameter importance: skipped (no completed search trial)."))
    if results:
        frame = pd.DataFrame(results)
        frame.index = [str(i) for i in frame.index]
        title = f"{study.name}: parameter importance for {metric}"
        build.figure(f"importance_{_slug(study.name)}", plots.importance_figure(frame, title),
                     f"{title}. {hows[0]}; one search per cell.")


PROVENANCE_LABELS: dict[str, str] = {
    "lt_ray_version": "lt-ray", "git_sha": "git sha", "torch_version": "torch",
    "ray_version": "ray", "optuna_version": "optuna", "device": "device", "gpu_name": "GPU",
    "hostname": "host",
}


def _provenance_section(build: Build, studies: Sequence[Study]) -> None:
    rows = []
    for study in studies:
        t = study.tables.trials
        meta = study.meta.get("provenance") or {}
        row = {"study": study.name}
        for column, label in PROVENANCE_LABELS.items():
            values = {str(v) for v in t[column].dropna()} if column in t else set()
            if meta.get(column) not in (None, ""):
                values.add(str(meta[column]))
            if column == "git_sha":
                values = {v[:12] for v in values}
            row[label] = ", ".join(sorted(values)) or "–"
        dirty = (bool(t["git_dirty"].fillna(False).any()) if "git_dirty" in t else False)
        if dirty or meta.get("git_dirty"):
            row["git sha"] += " (dirty)"
        rows.append(row)
    build.add(Heading(2, "Provenance"), Text(
        "The code and machines behind each study (from `study.json` and the trial rows; "
        "device, GPU and host are where the trials really ran)."), Table(pd.DataFrame(rows)))


