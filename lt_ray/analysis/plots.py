"""The report's figures, drawn on matplotlib's Agg canvas (no pyplot state, no display).

Every function returns a :class:`~matplotlib.figure.Figure`; :func:`render` turns it into PNG
and SVG bytes (SVG text stays text, so labels are searchable and crisp).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from lt_ray.analysis import search
from lt_ray.analysis.tables import METRIC_LABELS, pareto_mask
from lt_ray.results import schema as S

CURVE_METRICS: tuple[str, ...] = ("acc", "gm", "hm", "lr")
CURVE_STYLES: dict[str, str] = {"val": "--", "test": "-"}
SINGLE_OUTPUT_LABEL = "test recall"  # the legend of a method with one output
DPI = 120


def render(fig: Figure) -> dict[str, bytes]:
    """``{"png": ..., "svg": ...}`` of ``fig`` (text kept as text in the SVG)."""
    FigureCanvasAgg(fig)
    out = {}
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "lt-ray"}):
        for fmt in ("png", "svg"):
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=DPI, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else None)
            out[fmt] = buffer.getvalue()
    return out


def _wrap(text: str, width: int = 70) -> str:
    """``text`` on lines of at most ``width`` characters, broken at spaces and commas."""
    lines = textwrap.wrap(text.replace(",", ", "), width, break_long_words=False)
    return "\n".join(lines) or text


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = mpl.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def per_class_figure(data: pd.DataFrame, title: str,
                     labels: Mapping[str, str] | None = None) -> Figure:
    """Test recall per class (bars, %, head to tail) with the training count (log axis).

    ``data``: one row per output and class with ``output`` ("" for a single output, else
    old/new/ens: grouped bars), ``class_index``, ``class_name``, ``train_count``, ``mean`` and
    ``std`` (recall in %, std NaN for one run); ``labels``: legend names of the outputs (the
    methods' declared labels; default: the output names).
    """
    classes = (data.drop_duplicates(S.CLASS_INDEX)
               .sort_values([S.TRAIN_COUNT, S.CLASS_INDEX], ascending=[False, True]))
    order = classes[S.CLASS_INDEX].tolist()
    outputs = list(dict.fromkeys(data[S.OUTPUT]))
    n_classes = len(order)
    width = min(max(7.0, 0.12 * n_classes * max(1.0, 0.7 * len(outputs)) + 2.5), 18.0)
    fig = Figure(figsize=(width, 4.8 if n_classes <= 20 else 5.5))
    ax = fig.add_subplot()
    x = np.arange(n_classes)
    bar = 0.8 / len(outputs)
    names = {o: (labels or {}).get(o, o) if o else SINGLE_OUTPUT_LABEL for o in outputs}
    for i, (output, color) in enumerate(zip(outputs, _colors(len(outputs)), strict=True)):
        part = data[data[S.OUTPUT] == output].set_index(S.CLASS_INDEX).reindex(order)
        std = part["std"].to_numpy(dtype="float64", na_value=np.nan)
        ax.bar(x + (i - (len(outputs) - 1) / 2) * bar, part["mean"].to_numpy(dtype="float64"),
               bar, color=color, label=names[output],
               yerr=None if np.isnan(std).all() else std, capsize=2, error_kw={"lw": 0.8})
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("test recall (%)")
    ax.set_xlabel("class (sorted by training images, head → tail)")
    ax.set_xticks(x)
    names = [str(n) if pd.notna(n) else str(i) for n, i in
             zip(classes[S.CLASS_NAME], classes[S.CLASS_INDEX], strict=True)]
    if n_classes <= 10:  # slanted: CIFAR-10's "airplane automobile" would run together
        ax.set_xticklabels(names, fontsize=9, rotation=30, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticklabels(names, rotation=90, fontsize=8 if n_classes <= 20 else 6)
    ax.set_xlim(-0.6, n_classes - 0.4)
    ax.grid(axis="y", alpha=0.3)
    twin = ax.twinx()
    counts = classes[S.TRAIN_COUNT].to_numpy(dtype="float64", na_value=np.nan)
    twin.plot(x, counts, color="black", marker="o", ms=3, lw=1.2, label="training images")
    if np.nanmin(counts, initial=np.inf) > 0:
        twin.set_yscale("log")
        lo, hi = np.nanmin(counts) / 1.5, np.nanmax(counts) * 1.1
        twin.set_ylim(lo, lo * (hi / lo) ** (118 / 100))  # the same headroom as the bars
    twin.set_ylabel("training images per class (log scale)")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", fontsize=8,
              framealpha=0.9, ncol=len(handles))  # one row in the headroom above 100 %
    ax.set_title(_wrap(title, int(12 * width)), fontsize=10)
    fig.tight_layout()
    return fig


def learning_curves_figure(curves: Mapping[str, pd.DataFrame]) -> Figure:
    """Val (dashed) and test (solid) Acc, GM, HM and LR (%) per epoch, one colour per selected
    trial, one panel per metric."""
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2, sharex=True).ravel()
    colors = _colors(len(curves))
    for ax, metric in zip(axes, CURVE_METRICS, strict=True):
        for epochs, color in zip(curves.values(), colors, strict=True):
            for split, style in CURVE_STYLES.items():
                column = f"{split}_{metric}"
                if column in epochs and epochs[column].notna().any():
                    points = epochs[[S.EPOCH, column]].dropna()
                    ax.plot(points[S.EPOCH], 100 * points[column], style, color=color,
                            marker=_marker(len(points)), ms=6 if len(points) <= 2 else 4)
        ax.set_title(f"{METRIC_LABELS[metric]} ({metric})", fontsize=10)
        ax.set_ylabel(f"{METRIC_LABELS[metric]} (%)")
        ax.grid(alpha=0.3)
    last = max((float(e[S.EPOCH].max()) for e in curves.values() if len(e)), default=1.0)
    for ax in axes:
        ax.set_xlim(0, last + max(0.5, 0.02 * last))  # from epoch 0: one evaluation is a point
    for ax in axes[2:]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=c, lw=2, label=_wrap(label, 60))
               for label, c in zip(curves, colors, strict=True)]
    handles += [Line2D([], [], color="black", ls=style, label=split)
                for split, style in CURVE_STYLES.items()]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Learning curves of the selected trials (val dashed, test solid)")
    rows = sum(h.get_label().count("\n") + 1 for h in handles) // 2 + 1
    fig.subplots_adjust(bottom=min(0.1 + 0.035 * rows, 0.5), hspace=0.25, top=0.92)
    return fig


def _marker(points: int) -> str | None:
    """Points drawn as markers when there are few (a run evaluated once is one marker)."""
    return "o" if points <= 2 else "." if points < 30 else None


def base_curves_figure(histories: Mapping[str, Sequence[pd.DataFrame]]) -> Figure:
    """One panel per stage model (its title): test Acc, GM, HM and LR (%) per epoch (mean over
    its seeds, the band their range), the training loss on the right axis."""
    names = list(histories)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows + 0.8))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = dict(zip(CURVE_METRICS, _colors(len(CURVE_METRICS)), strict=True))
    for ax, name in zip(axes, names, strict=False):
        runs = histories[name]
        twin = ax.twinx()
        for metric in CURVE_METRICS:
            column = f"test_{metric}"
            table = _by_epoch(runs, column)
            if table.empty:
                continue
            mean = 100 * table.mean(axis=1)
            ax.plot(mean.index, mean, color=colors[metric], marker=_marker(len(mean)), ms=3,
                    label=METRIC_LABELS[metric])
            if table.shape[1] > 1:
                ax.fill_between(mean.index, 100 * table.min(axis=1), 100 * table.max(axis=1),
                                color=colors[metric], alpha=0.15, lw=0)
        loss = _by_epoch(runs, S.TRAIN_LOSS).mean(axis=1)
        if len(loss):
            twin.plot(loss.index, loss, color="0.4", ls=":", lw=1.2, label="train loss")
        twin.tick_params(labelsize=7)
        ax.set_ylim(0, 100)
        ax.set_title(_wrap(f"{name} ({len(runs)} seed{'s' * (len(runs) != 1)})", 45), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("test (%)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colors[m], lw=2, label=METRIC_LABELS[m])
               for m in CURVE_METRICS] + [Line2D([], [], color="0.4", ls=":",
                                                 label="train loss (right axis)")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle("The stage models (bases) during their training: test-half metrics at each "
                 "evaluated epoch", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return fig


def _by_epoch(runs: Sequence[pd.DataFrame], column: str) -> pd.DataFrame:
    """``column`` of each run (a column per run) indexed by epoch, evaluated epochs only."""
    parts = [r.set_index(S.EPOCH)[column].dropna().rename(i) for i, r in enumerate(runs)
             if column in r and r[column].notna().any()]
    return pd.concat(parts, axis=1).sort_index() if parts else pd.DataFrame()


FAMILY_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860")


def paper_figure(frame: pd.DataFrame, rows: Sequence[tuple[str, str]], blocks: Sequence[str],
                 metrics: Sequence[str], families: Sequence[str] = ()) -> Figure:
    """Horizontal bars per method row (in table order, coloured by group: the colour of a group
    is its place in ``families``, the same in every report), one panel per metric, one bar per
    dataset/IF block (shaded), error bars the seed std."""
    order = list(dict.fromkeys([*families, *(f for f, _ in rows)]))
    color = {f: FAMILY_COLORS[i % len(FAMILY_COLORS)] for i, f in enumerate(order)}
    families = [f for f in order if any(f == g for g, _ in rows)]
    height = 0.8 / max(len(blocks), 1)
    fig = Figure(figsize=(3.6 * len(metrics) + 2.4, 0.9 + 0.32 * len(rows) * len(blocks) + 1.0))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    y = np.arange(len(rows))[::-1].astype(float)
    indexed = frame.set_index(["row", "block"])
    for ax, metric in zip(axes, metrics, strict=True):
        for b, block in enumerate(blocks):
            offset = (len(blocks) - 1) / 2 * height - b * height
            for (family, name), pos in zip(rows, y, strict=True):
                if (name, block) not in indexed.index:
                    continue
                line = indexed.loc[(name, block)]
                mean, std = line[metric], line[f"{metric}_std"]
                if pd.isna(mean):
                    continue
                ax.barh(pos + offset, mean, height * 0.95, color=color[family],
                        alpha=1.0 - 0.45 * b / max(len(blocks) - 1, 1),
                        xerr=None if pd.isna(std) else std, capsize=2,
                        error_kw={"lw": 0.8})
        ax.set_title(METRIC_LABELS[metric] + " (%)", fontsize=10)
        ax.set_xlim(0, 100)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([name for _, name in rows], fontsize=8)
    handles = [Patch(color=color[f], label=f) for f in families]
    if len(blocks) > 1:
        handles += [Patch(color="0.3", alpha=1.0 - 0.45 * b / (len(blocks) - 1),
                                      label=block) for b, block in enumerate(blocks)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8)
    fig.suptitle("Test-half metrics per method" + (", " + blocks[0] if len(blocks) == 1 else
                                                    " and imbalance factor")
                 + " (error bars: std over seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.02 * math.ceil(len(handles) / 4), 1, 0.97))
    return fig


def objective_figure(trials: pd.DataFrame, objectives: Sequence[tuple[str, str]],
                     title: str) -> Figure:
    """Each objective (%) over the study's trials in start order: completed search trials
    (filled), early-stopped ones (hollow) and the best-so-far line of each cell."""
    trials = search.in_start_order(trials[trials[S.REPEAT_OF].isna()]).reset_index(drop=True)
    trials = trials.assign(_order=np.arange(1, len(trials) + 1))
    fig = Figure(figsize=(7.5 * len(objectives), 4.5))
    axes = fig.subplots(1, len(objectives), squeeze=False)[0]
    cells = list(dict.fromkeys(trials[S.CELL]))
    for ax, (metric, mode) in zip(axes, objectives, strict=True):
        for cell, color in zip(cells, _colors(len(cells)), strict=True):
            part = trials[trials[S.CELL] == cell]
            name = cell or "all trials"
            done = part[(part[S.STATUS] == "completed") & part[metric].notna()]
            stopped = part[(part[S.STATUS] == "early_stopped") & part[metric].notna()]
            ax.scatter(done["_order"], 100 * done[metric], color=color, s=22, zorder=3,
                       label=_wrap(f"{name} (completed)", 50))
            if len(stopped):
                ax.scatter(stopped["_order"], 100 * stopped[metric], facecolors="none",
                           edgecolors=color, s=22, zorder=3,
                           label=_wrap(f"{name} (early stopped)", 50))
            if len(done):
                best = search.best_so_far(100 * done[metric], mode)
                ax.step(done["_order"], best, where="post", color=color, lw=1.2, alpha=0.8)
        ax.set_xlabel("trial (in start order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{metric} ({mode}); line: best so far", fontsize=10)
        ax.grid(alpha=0.3)
        if cells and len(trials):
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    failed = int((trials[S.STATUS] == "failed").sum())
    fig.suptitle(f"{title}: {len(trials)} search trials" + (f", {failed} failed (not shown)"
                                                           if failed else ""))
    fig.tight_layout()
    return fig


def pareto_figure(trials: pd.DataFrame, objectives: Sequence[tuple[str, str]],
                  title: str) -> Figure:
    """The first two objectives (%) of the completed search trials; each cell's Pareto front
    (over all objectives) marked and joined."""
    (mx, _), (my, _) = objectives[0], objectives[1]
    modes = [mode for _, mode in objectives]
    metrics = [metric for metric, _ in objectives]
    done = trials[(trials[S.STATUS] == "completed") & trials[S.REPEAT_OF].isna()]
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.add_subplot()
    cells = list(dict.fromkeys(done[S.CELL]))
    for cell, color in zip(cells, _colors(len(cells)), strict=True):
        part = done[done[S.CELL] == cell]
        front = pareto_mask(part[metrics], modes)
        name = cell or "all trials"
        ax.scatter(100 * part.loc[~front, mx], 100 * part.loc[~front, my], color=color,
                   alpha=0.35, s=18, label=_wrap(f"{name}: dominated", 50))
        on = part[front].sort_values(mx)
        ax.plot(100 * on[mx], 100 * on[my], "-o", color=color, ms=7, mec="black", lw=1,
                label=_wrap(f"{name}: Pareto front ({len(on)})", 50))
    ax.set_xlabel(f"{mx} (%, {objectives[0][1]})")
    ax.set_ylabel(f"{my} (%, {objectives[1][1]})")
    extra = f"; front over all {len(metrics)} objectives" if len(metrics) > 2 else ""
    ax.set_title(_wrap(f"{title}: Pareto front of the completed search trials{extra}"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    if cells:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.tight_layout()
    return fig


def importance_figure(importances: pd.DataFrame, title: str) -> Figure:
    """Horizontal bars of parameter importance (one row per parameter, one colour per cell)."""
    data = importances.fillna(0.0)
    data = data.loc[data.max(axis=1).sort_values().index]
    fig = Figure(figsize=(8, 1.2 + 0.45 * len(data) * max(1, 0.6 * data.shape[1])))
    ax = fig.add_subplot()
    data.plot.barh(ax=ax, color=_colors(data.shape[1]), legend=data.shape[1] > 1, width=0.8)
    ax.set_xlabel("importance (fraction of the total, Optuna)")
    ax.set_ylabel("searched parameter")
    ax.set_xlim(0, 1)
    ax.set_title(_wrap(title), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    if data.shape[1] > 1:  # right of the axes: below, it covered the x-axis label
        handles = ax.get_legend_handles_labels()[0]
        ax.legend(handles[::-1], [_wrap(str(c), 40) for c in data.columns][::-1], fontsize=7,
                  loc="upper left", bbox_to_anchor=(1.02, 1.0), title="cell")
    return fig
