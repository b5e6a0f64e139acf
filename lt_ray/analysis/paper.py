"""The paper layout of the comparison: one row per method as a reader names it, grouped.

Each selected (study, cell, output) of the long table becomes a row named by its study's
declaration (``study.json``: every cell's ``rows``, computed from the methods' titles and
output templates, e.g. ``CE``, ``CE + GML (ensemble)``, ``CE + BSCE re-train``) and placed in
its group (``families``: simple methods, earlier improvements, the GML plug-in). Columns: per
dataset and imbalance factor the chosen metrics (mean ± std over the seed repeats) and ``n``.
The same method reached through several cells (a GML study's ``old`` head is the base in every
cell of that base) is one row when the values agree; rows that share a name but not their
values keep both, each with its study and cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lt_ray.analysis import tables as T
from lt_ray.analysis.data import Study
from lt_ray.errors import LTRayError
from lt_ray.results import schema as S

DEFAULT_METRICS: tuple[str, ...] = ("acc", "gm", "hm", "lr")
ROW = "row"
FAMILY = "family"
BLOCK = "block"  # the column group: dataset and imbalance factor
SELECTED = "selected_output"  # the output the cell's search selected on (its primary)
OTHER_FAMILY = "other"


@dataclass(frozen=True)
class PaperTable:
    """The paper layout: ``frame`` has one row per (row, block) with ``family``, ``row``,
    ``dataset``, ``imb_factor``, ``block``, each metric's mean and ``<metric>_std`` (in %),
    ``n`` and where it came from (study, cell, output, trial_id); ``rows`` and ``blocks`` are
    the table's order; ``notes`` say what could not be named."""

    frame: pd.DataFrame
    rows: tuple[tuple[str, str], ...]  # (family, row name) in table order
    blocks: tuple[str, ...]
    metrics: tuple[str, ...]
    footnote: str
    notes: tuple[str, ...] = ()
    families: tuple[str, ...] = ()  # every group the studies declare, in order (colours)

    @property
    def empty(self) -> bool:
        return self.frame.empty


def parse_metrics(metrics: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--metrics acc,hm`` as metric keys of :data:`~lt_ray.analysis.tables.METRIC_LABELS`;
    an unknown one is a user error naming the known ones."""
    if metrics is None:
        return DEFAULT_METRICS
    items = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str)
                                         else metrics) if m.strip()]
    unknown = [m for m in items if m not in T.METRIC_LABELS]
    if unknown or not items:
        raise LTRayError(f"--metrics: {', '.join(unknown) or 'nothing given'}: choose among "
                         f"{','.join(T.METRIC_LABELS)}")
    return tuple(dict.fromkeys(items))


def can_name_rows(studies: Sequence[Study]) -> bool:
    """Whether every study declares its cells' rows (a study.json written or refreshed by
    this lt-ray; an earlier one has none)."""
    return all(isinstance(c, dict) and isinstance(c.get("rows"), dict)
               for s in studies for c in (s.meta.get("cells") or [None]))


def block_name(dataset: Any, imb_factor: Any) -> str:
    return f"{dataset}, IF {T.format_value(imb_factor)}"


def paper_table(table: pd.DataFrame, selected: pd.DataFrame, studies: Sequence[Study],
                metrics: Sequence[str] = DEFAULT_METRICS) -> PaperTable:
    """The paper layout of the long ``table`` (grouped by study and cell) whose selected trials
    are ``selected``."""
    declared = {(s.name, str(c.get("label", ""))): c for s in studies
                for c in s.meta.get("cells") or []}
    place = {key: i for i, key in enumerate(declared)}  # studies as given, cells in order
    families = [f for s in studies for f in s.meta.get("families") or []]
    where = {(r[S.STUDY], r[S.CELL]): r for _, r in selected.iterrows()}
    bases = {(s.name, o.get("name")) for s in studies
             for outputs in (s.meta.get("outputs") or {}).values() if isinstance(outputs, list)
             for o in outputs if isinstance(o, dict) and o.get("family") == S.BASE_FAMILY}
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    for _, line in table.iterrows():
        key = (str(line[S.STUDY]), str(line[S.CELL]))
        cell = declared.get(key, {})
        output = line[T.OUTPUT] or ""
        if output != cell.get("primary", output) and (key[0], output) not in bases:
            continue  # an output the cell's search did not tune: the long table has it
        declared_rows = cell.get("rows") or {}
        row = declared_rows.get(output)
        if row is None:
            notes.append(f"{key[0]} / {key[1] or 'all trials'} ({line[T.OUTPUT] or 'its output'}):"
                         " no row name declared; shown by its cell")
            row = {"name": f"{key[1] or key[0]} {line[T.OUTPUT]}".strip(), "family": OTHER_FAMILY}
        trial = where[key]
        dataset, imb = trial.get(S.DATASET), trial.get(S.IMB_FACTOR)
        rec = {FAMILY: row["family"], ROW: row["name"], S.DATASET: dataset,
               S.IMB_FACTOR: imb, BLOCK: block_name(dataset, imb), T.N: int(line[T.N]),
               S.STUDY: key[0], S.CELL: key[1], T.OUTPUT: line[T.OUTPUT],
               S.TRIAL_ID: line[S.TRIAL_ID], T.SELECTED_ON: line[T.SELECTED_ON],
               SELECTED: cell.get("primary", output) == output,
               "_place": (place.get(key, len(place)),
                          list(declared_rows).index(output) if output in declared_rows else 0)}
        for metric in metrics:
            column = T.value_column("test", metric)
            rec[metric], rec[f"{metric}_std"] = line[column], line[column + "_std"]
        records.append(rec)
    columns = [FAMILY, ROW, S.DATASET, S.IMB_FACTOR, BLOCK, *metrics,
               *(f"{m}_std" for m in metrics), T.N, S.STUDY, S.CELL, T.OUTPUT, S.TRIAL_ID,
               T.SELECTED_ON, SELECTED]
    records.sort(key=lambda r: r.pop("_place"))
    frame = _merge_same_rows(pd.DataFrame.from_records(records, columns=columns), metrics)
    order = {f: i for i, f in enumerate(dict.fromkeys([*families, OTHER_FAMILY]))}
    rows = sorted(dict.fromkeys(zip(frame[FAMILY], frame[ROW], strict=True)),
                  key=lambda fr: order.get(fr[0], len(order)))  # stable: first seen first
    blocks = sorted(dict.fromkeys(zip(frame[S.DATASET], frame[S.IMB_FACTOR], strict=True)),
                    key=lambda b: (str(b[0]), _number(b[1])))
    names = [block_name(*b) for b in blocks]
    rank = {r: i for i, (_, r) in enumerate(rows)}
    frame = frame.assign(_r=frame[ROW].map(rank), _b=frame[BLOCK].map(names.index)).sort_values(
        ["_r", "_b"]).drop(columns=["_r", "_b"]).reset_index(drop=True)
    return PaperTable(frame=frame, rows=tuple(rows), blocks=tuple(names),
                      metrics=tuple(metrics), footnote=_footnote(frame), notes=tuple(notes),
                      families=tuple(order))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.inf


def _merge_same_rows(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (row name, block). Where a cell's selected output and another cell's other
    output share a name (``CE + GML`` is the selected head of one cell and the unselected new
    head of the ensemble cell), the selected one stands. Equal values are one row; a clash
    keeps every source, its name completed by its study and cell."""
    keep: list[int] = []
    renamed = frame[ROW].copy()
    for _, part in frame.groupby([ROW, BLOCK], sort=False):
        if part[SELECTED].any():
            part = part[part[SELECTED]]
        values = part[[*metrics, T.N]].round(9).astype("float64").fillna(-1.0)
        distinct = values.drop_duplicates()  # the first source of each set of values
        for index in distinct.index:
            keep.append(int(index))
            if len(distinct) > 1:
                line = frame.loc[index]
                renamed[index] = f"{line[ROW]} ({line[S.STUDY]}: {line[S.CELL] or 'all trials'})"
    return frame.assign(**{ROW: renamed}).loc[sorted(keep)].reset_index(drop=True)


def _footnote(frame: pd.DataFrame) -> str:
    selected_on = ", ".join(sorted(set(frame[T.SELECTED_ON].astype(str)))) or "–"
    ns = sorted(set(frame[T.N].astype(int)))
    spread = ("mean ± std over n seed repeats of the selected configuration (each repeat "
              "re-trains the whole chain, its base included, with that seed)"
              if max(ns, default=1) > 1 else "one run each (no seed repeats)")
    return (f"Test half of the official test set (held out: no search saw it), last epoch, in "
            f"%; each row's configuration is the best of its cell's search trials on the "
            f"validation half by {selected_on}; values are {spread}. Bold: the best mean of "
            f"each column. Rows of a plug-in re-train the classifier of the base named first; "
            f"a plug-in cell shows the output its search selected on and its base (its other "
            f"outputs, not tuned for, are in the long table).")


# --- text forms ----------------------------------------------------------------------------


def _cell(mean: Any, std: Any) -> str:
    if mean is None or pd.isna(mean):
        return T.MISSING
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def _best(paper: PaperTable) -> dict[tuple[str, str], float]:
    """The best (largest) mean of each (block, metric) column."""
    out: dict[tuple[str, str], float] = {}
    for block, part in paper.frame.groupby(BLOCK, sort=False):
        for metric in paper.metrics:
            values = part[metric].dropna()
            if len(values):
                out[(str(block), metric)] = float(values.max())
    return out


def grid(paper: PaperTable, bold: tuple[str, str] = ("**", "**"),
         group: tuple[str, str] = ("*", "*")) -> tuple[list[str], list[list[str]]]:
    """Header and body of the table as text cells: group rows (the family, wrapped in
    ``group``) then its method rows; the best mean of each column wrapped in ``bold``."""
    best = _best(paper)
    header = ["method"] + [f"{block}: {T.METRIC_LABELS.get(m, m)}" for block in paper.blocks
                           for m in (*paper.metrics, "n")]
    body: list[list[str]] = []
    indexed = paper.frame.set_index([ROW, BLOCK])
    family = None
    for fam, name in paper.rows:
        if fam != family:
            family = fam
            body.append([f"{group[0]}{fam}{group[1]}"] + [""] * (len(header) - 1))
        cells = [name]
        for block in paper.blocks:
            if (name, block) not in indexed.index:
                cells += [T.MISSING] * len(paper.metrics) + [""]
                continue
            line = indexed.loc[(name, block)]
            for metric in paper.metrics:
                text = _cell(line[metric], line[f"{metric}_std"])
                top = best.get((block, metric))
                if top is not None and pd.notna(line[metric]) and abs(line[metric] - top) < 1e-9:
                    text = f"{bold[0]}{text}{bold[1]}"
                cells.append(text)
            cells.append(str(int(line[T.N])))
        body.append(cells)
    return header, body


def display_frame(paper: PaperTable) -> pd.DataFrame:
    """The table for the report (Markdown emphasis in its cells)."""
    header, body = grid(paper)
    return pd.DataFrame(body, columns=header)


def to_markdown(paper: PaperTable, caption: str) -> str:
    header, body = grid(paper)
    lines = ["| " + " | ".join(header) + " |",
             "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return f"{caption}\n\n" + "\n".join(lines) + f"\n\n{paper.footnote}\n"


def to_csv(paper: PaperTable) -> str:
    """Tidy numbers: one line per row and block, values in % (std empty for one run)."""
    return paper.frame.to_csv(index=False, float_format="%.4f")


def to_latex(paper: PaperTable, caption: str) -> str:
    """A booktabs ``table``: a column group per block, a ``\\midrule`` and an italic line per
    row group, the best mean of each column bold, the footnote under it."""
    per_block = len(paper.metrics) + 1
    columns = "l" + ("r" * per_block) * len(paper.blocks)
    top = " & ".join([""] + [f"\\multicolumn{{{per_block}}}{{c}}{{{T.latex_escape(b)}}}"
                             for b in paper.blocks])
    rules = " ".join(f"\\cmidrule(lr){{{2 + i * per_block}-{1 + (i + 1) * per_block}}}"
                     for i in range(len(paper.blocks)))
    names = " & ".join(["Method"] + [label for _ in paper.blocks for label in
                                     (*(T.METRIC_LABELS[m] for m in paper.metrics), "$n$")])
    best = _best(paper)
    indexed = paper.frame.set_index([ROW, BLOCK])
    lines = ["% lt-ray analyze --layout paper: needs \\usepackage{booktabs}",
             "\\begin{table}[t]", "\\centering", "\\small",
             f"\\caption{{{T.latex_escape(caption)}}}", "\\label{tab:lt-ray-paper}",
             f"\\begin{{tabular}}{{{columns}}}", "\\toprule", top + " \\\\", rules,
             names + " \\\\"]
    family = None
    for fam, name in paper.rows:
        if fam != family:
            family = fam
            lines += ["\\midrule",
                      f"\\multicolumn{{{len(columns)}}}{{l}}{{\\emph{{{T.latex_escape(fam)}}}}}"
                      " \\\\"]
        cells = [T.latex_escape(name)]
        for block in paper.blocks:
            if (name, block) not in indexed.index:
                cells += ["--"] * len(paper.metrics) + [""]
                continue
            line = indexed.loc[(name, block)]
            for metric in paper.metrics:
                mean, std = line[metric], line[f"{metric}_std"]
                text = ("--" if pd.isna(mean) else f"{mean:.2f}" if pd.isna(std)
                        else f"{mean:.2f} $\\pm$ {std:.2f}")
                top_value = best.get((block, metric))
                if top_value is not None and pd.notna(mean) and abs(mean - top_value) < 1e-9:
                    text = f"\\textbf{{{text}}}"
                cells.append(text)
            cells.append(str(int(line[T.N])))
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}",
              f"\\par\\smallskip{{\\footnotesize {T.latex_escape(paper.footnote)}}}",
              "\\end{table}"]
    return "\n".join(lines) + "\n"
