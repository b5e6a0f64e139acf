"""Best trial per group, the comparison table and its Markdown/CSV/LaTeX forms.

Selection follows the study protocol: among the *completed search* trials of a group (seed
repeats excluded) the one with the best validation metric wins; the table reports its test-half
metrics, or the mean ± std over its seed repeats (the new seeds only: the selected trial itself
is left out, its value is biased upward by the selection).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lt_ray.analysis.data import DeclaredOutputs
from lt_ray.metrics import parse_metric_name
from lt_ray.results import schema as S

#: The long-tail metrics in the table, with their column labels.
METRIC_LABELS: dict[str, str] = {
    "acc": "Acc", "gm": "GM", "hm": "HM", "lr": "LR", "many": "Many", "medium": "Medium",
    "few": "Few",
}
TEST_HEADER = "test half (held out)"
FULLTEST_HEADER = "fulltest (val half drove the selection)"
SPLIT_HEADERS: dict[str, str] = {"test": TEST_HEADER, "fulltest": FULLTEST_HEADER}
OUTPUT = "output"
SELECTED_ON = "selected_on"
SELECTED_VALUE = "selected_value_pct"
N = "n"
VALUES_FROM = "values_from"
MISSING = "–"  # an empty shot group (no class) or a metric the run did not report


def search_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed trials of the search (not seed repeats)."""
    return trials[(trials[S.STATUS] == "completed") & trials[S.REPEAT_OF].isna()]


def repeats_of(trials: pd.DataFrame, study: str, trial_id: str) -> pd.DataFrame:
    """The completed seed repeats of ``trial_id`` in ``study``."""
    mask = ((trials[S.STUDY] == study) & (trials[S.REPEAT_OF] == trial_id)
            & (trials[S.STATUS] == "completed"))
    return trials[mask.fillna(False).astype(bool)]


def _group_key(key: Any) -> tuple[Any, ...]:
    return key if isinstance(key, tuple) else (key,)


def select_best(trials: pd.DataFrame, group_by: Sequence[str],
                objectives: Mapping[str, tuple[str, str]]) -> tuple[pd.DataFrame, list[str]]:
    """One row per group of search trials that has a selectable one: the group's best completed
    search trial on its study's ``(metric, mode)``; plus a note for every group without one.

    The rows are trials rows with ``selected_on`` (the metric) and ``selected_value_pct``.
    Ties go to the lower trial id.
    """
    rows: list[pd.Series] = []
    notes: list[str] = []
    candidates = search_trials(trials)
    searched = trials[trials[S.REPEAT_OF].isna()]  # repeats are found through repeat_of
    for key, group in searched.groupby(list(group_by), dropna=False, sort=True):
        key = _group_key(key)
        pool = candidates.loc[candidates.index.intersection(group.index)]
        best = None
        for study, part in pool.groupby(S.STUDY, sort=True):
            metric, mode = objectives[str(study)]
            scored = part[part[metric].notna()]
            if scored.empty:
                continue
            top = scored.sort_values([metric, S.TRIAL_ID], ascending=[mode == "min", True])
            candidate = top.iloc[0].copy()
            candidate[SELECTED_ON] = metric
            candidate[SELECTED_VALUE] = 100 * float(candidate[metric])
            if best is None or _better(candidate[metric], best[best[SELECTED_ON]], mode):
                best = candidate
        if best is None:
            notes.append(f"{group_label(group_by, key)}: no completed search trial with a "
                         f"value of {_metrics_named(group, objectives)} ({status_counts(group)})")
            continue
        rows.append(best)
    if not rows:
        return trials.iloc[0:0].assign(**{SELECTED_ON: [], SELECTED_VALUE: []}), notes
    return pd.DataFrame(rows).reset_index(drop=True), notes


def _better(value: float, other: float, mode: str) -> bool:
    return value < other if mode == "min" else value > other


def _metrics_named(group: pd.DataFrame, objectives: Mapping[str, tuple[str, str]]) -> str:
    return ", ".join(sorted({objectives[str(s)][0] for s in group[S.STUDY].unique()}))


def status_counts(trials: pd.DataFrame) -> str:
    """``"4 trials: 3 completed, 1 failed"``."""
    counts = trials[S.STATUS].value_counts()
    parts = [f"{int(counts[s])} {s.replace('_', ' ')}" for s in S.STATUSES if s in counts]
    return f"{len(trials)} trial{'s' * (len(trials) != 1)}: " + ", ".join(parts)


def format_value(value: Any) -> str:
    """A group value for labels: ``100.0`` -> ``100``, null -> ``NA``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "NA"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def group_label(group_by: Sequence[str], key: Sequence[Any]) -> str:
    """A readable name of a group: study and cell as they are, other columns as ``col=value``."""
    parts = []
    for column, value in zip(group_by, key, strict=True):
        text = format_value(value)
        if column in (S.STUDY, S.CELL):
            if text not in ("", "NA"):
                parts.append(text)
        else:
            parts.append(f"{column}={text}")
    return " / ".join(parts) or "all trials"


def outputs_of(row: pd.Series, declared: DeclaredOutputs) -> list[str]:
    """The named outputs with test metrics in ``row``, in their declared order; [] for a
    method with one output."""
    found = {p[2] for c, v in row.items()
             if isinstance(c, str) and (p := parse_metric_name(c)) is not None
             and p[0] == "test" and p[2] is not None and pd.notna(v)}
    return declared.sort(found)


def value_column(split: str, metric: str) -> str:
    """The comparison-table column of a metric, in %: ``test_acc_pct``."""
    return f"{split}_{metric}_pct"


def comparison_table(trials: pd.DataFrame, selected: pd.DataFrame,
                     group_by: Sequence[str], declared: DeclaredOutputs) -> pd.DataFrame:
    """The numeric comparison table: one row per selected group and output, values in %.

    Columns: the group columns, ``output`` ("" for a single-output method), ``trial_id`` (the
    selected trial), ``selected_on``, ``selected_value_pct``, ``n`` (rows behind each value),
    ``values_from`` and, per split (test, fulltest) and metric, ``{split}_{metric}_pct`` and
    ``{split}_{metric}_pct_std`` (std over seed repeats; NaN for a single value).
    """
    records: list[dict[str, Any]] = []
    for index, best in selected.iterrows():
        repeats = repeats_of(trials, best[S.STUDY], best[S.TRIAL_ID])
        source = repeats if len(repeats) else selected.loc[[index]]
        for output in outputs_of(best, declared) or [""]:
            rec: dict[str, Any] = {c: best[c] for c in group_by}
            rec.update({OUTPUT: output, S.TRIAL_ID: best[S.TRIAL_ID],
                        SELECTED_ON: best[SELECTED_ON], SELECTED_VALUE: best[SELECTED_VALUE],
                        N: len(source),
                        VALUES_FROM: "seed repeats" if len(repeats) else "selected trial"})
            for split in SPLIT_HEADERS:
                for metric in METRIC_LABELS:
                    column = f"{split}_{metric}" + (f"_{output}" if output else "")
                    values = 100 * source[column] if column in source else pd.Series(
                        [np.nan] * len(source), dtype="float64")
                    rec[value_column(split, metric)] = values.mean()
                    rec[value_column(split, metric) + "_std"] = (
                        values.std() if len(source) > 1 else np.nan)
            records.append(rec)
    columns = [*group_by, OUTPUT, S.TRIAL_ID, SELECTED_ON, SELECTED_VALUE, N, VALUES_FROM]
    columns += [value_column(s, m) + suffix for s in SPLIT_HEADERS for m in METRIC_LABELS
                for suffix in ("", "_std")]
    return pd.DataFrame.from_records(records, columns=columns)


def _cell(mean: float, std: float) -> str:
    if pd.isna(mean):
        return MISSING
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def display_table(table: pd.DataFrame, group_by: Sequence[str]) -> pd.DataFrame:
    """The comparison table as text, with two header levels: ``("", "study")``...,
    ``("test half (held out)", "Acc")``..., ``("fulltest (val half drove the selection)",
    "Acc")``.... The output column is kept only when a method has several outputs."""
    show_output = bool((table[OUTPUT] != "").any())
    out: dict[tuple[str, str], list[str]] = {}
    for column in group_by:
        out[("", column)] = [format_value(v) for v in table[column]]
    if show_output:
        out[("", "output")] = [o or "—" for o in table[OUTPUT]]
    out[("", "selected on")] = [str(s) for s in table[SELECTED_ON]]
    out[("", "trial")] = [str(t) for t in table[S.TRIAL_ID]]
    out[("", "n")] = [str(int(n)) for n in table[N]]
    for split, header in SPLIT_HEADERS.items():
        for metric, label in METRIC_LABELS.items():
            col = value_column(split, metric)
            out[(header, label)] = [_cell(m, s) for m, s in zip(table[col], table[col + "_std"],
                                                                strict=True)]
    frame = pd.DataFrame(out)
    frame.columns = pd.MultiIndex.from_tuples(list(out))
    return frame


def flat_columns(frame: pd.DataFrame) -> list[str]:
    """Two-level display columns as one line: the fulltest columns get a ``fulltest`` prefix."""
    names = []
    for top, name in frame.columns:
        names.append(f"fulltest {name}" if top == FULLTEST_HEADER else name)
    return names


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of a display frame (``|`` in cells escaped)."""
    columns = flat_columns(frame) if isinstance(frame.columns, pd.MultiIndex) else [
        str(c) for c in frame.columns]

    def row(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ")
                                 for c in cells) + " |"

    lines = [row(columns), "| " + " | ".join("---" for _ in columns) + " |"]
    lines += [row(values) for values in frame.itertuples(index=False)]
    return "\n".join(lines)


_LATEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (for a caption)."""
    return "".join(_LATEX_SPECIALS.get(c, c) for c in text)


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    """A LaTeX ``table`` (booktabs, UTF-8 input) of a display frame, via pandas (jinja2)."""
    text_columns = sum(1 for top, _ in frame.columns if top == "")
    body = frame.to_latex(index=False, escape=True, caption=latex_escape(caption),
                          label="tab:lt-ray-comparison", multicolumn_format="c",
                          column_format="l" * text_columns + "r" * (frame.shape[1]
                                                                    - text_columns))
    return "% lt-ray analyze: needs \\usepackage{booktabs}\n" + body


def to_csv(table: pd.DataFrame) -> str:
    """The numeric comparison table as CSV (values in %, std empty for a single value)."""
    return table.to_csv(index=False, float_format="%.4f")


def pareto_mask(values: pd.DataFrame, modes: Sequence[str]) -> pd.Series:
    """Which rows no other row dominates (at least as good on every objective, better on
    one); rows with a missing objective are never on the front. Ties stay on the front."""
    sign = np.array([1.0 if m == "max" else -1.0 for m in modes])
    ok = values.notna().all(axis=1).to_numpy()
    points = values.to_numpy(dtype="float64", na_value=np.nan) * sign
    scored = points[ok]
    geq = (scored[None, :, :] >= scored[:, None, :]).all(axis=2)  # [i, j]: j >= i everywhere
    gt = (scored[None, :, :] > scored[:, None, :]).any(axis=2)  # [i, j]: j > i somewhere
    dominated = (geq & gt).any(axis=1)
    mask = np.zeros(len(values), dtype=bool)
    mask[np.flatnonzero(ok)] = ~dominated
    return pd.Series(mask, index=values.index)
