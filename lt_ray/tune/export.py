"""Ray Tune results -> lt-ray TrialRecords -> Parquet (results.writer); summaries.

Reads the study through Tune's public ResultGrid API (no parsing of Ray's file layout), so a
study directory can be exported again at any time (``lt-ray export``): idempotent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lt_ray.errors import LTRayError
from lt_ray.metrics import ALL_NAMES
from lt_ray.results import TrialRecord, write_study
from lt_ray.tune.runner import STUDY_FILE, CellResult
from lt_ray.tune.space import Cell, SweepSpec
from lt_ray.tune.trainable import FINAL_FILE

HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "epoch_time_s", "train_images_per_s")


def records_for_cell(spec_base: dict[str, Any], study: str, cell: Cell, results: Any
                     ) -> list[TrialRecord]:
    from lt_ray.config import ExperimentConfig

    records = []
    for result in results:
        searched = {k: v for k, v in (result.config or {}).items() if not k.startswith("_")}
        config = ExperimentConfig.from_dict(spec_base).replace({**cell.values, **searched})
        metrics = dict(result.metrics or {})
        history = _history(result)
        final_extra = _final_json(result)
        epochs_done = int(metrics.get("epoch", 0) or 0)
        if result.error is not None:
            status = "failed"
        elif epochs_done >= config.train.epochs:
            status = "completed"
        elif epochs_done > 0:
            status = "early_stopped"
        else:
            status = "running"
        final = {k: _num(metrics.get(k)) for k in (*ALL_NAMES, *HISTORY_KEYS)}
        final["wall_time_s"] = _num(metrics.get("time_total_s"))  # Tune's trial wall time
        records.append(TrialRecord(
            study=study, cell=cell.label if cell.values else "",
            trial_id=str(metrics.get("trial_id") or Path(result.path).name),
            status=status, error=_error_text(result.error), config=config.to_dict(),
            final=final, history=history,
            per_class=final_extra.get("per_class", {}),
            class_names=final_extra.get("class_names", []),
            train_class_counts=final_extra.get("train_class_counts", []),
            provenance=final_extra.get("provenance", {}),
            search_params=searched,
        ))
    return records


def _history(result: Any) -> list[dict[str, Any]]:
    df = result.metrics_dataframe
    if df is None or df.empty:
        return []
    keep = [c for c in df.columns if c in HISTORY_KEYS or c in ALL_NAMES]
    return [{k: _num(v) for k, v in row.items()} for row in df[keep].to_dict("records")]


def _final_json(result: Any) -> dict[str, Any]:
    if result.checkpoint is None:
        return {}
    with result.checkpoint.as_directory() as folder:
        path = Path(folder) / FINAL_FILE
        return json.loads(path.read_text()) if path.is_file() else {}


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    text = str(error).strip().splitlines()
    return text[-1][:500] if text else type(error).__name__


def _num(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def export(spec: SweepSpec, study_dir: Path, cell_results: list[CellResult]
           ) -> tuple[dict[str, Path], list[TrialRecord]]:
    records = []
    for cr in cell_results:
        records.extend(records_for_cell(spec.base, spec.name, cr.cell, cr.results))
    return write_study(records, study_dir), records


def export_study_dir(study_dir: Path) -> tuple[dict[str, Path], list[TrialRecord]]:
    """Re-export a study folder from its Tune experiment state (``lt-ray export``)."""
    from ray import tune

    from lt_ray.tune.trainable import train_trial

    marker = study_dir / STUDY_FILE
    if not marker.is_file():
        raise LTRayError(f"{study_dir} holds no lt-ray study ({STUDY_FILE} missing)")
    study = json.loads(marker.read_text())
    records: list[TrialRecord] = []
    for entry in study["cells"]:
        cell = Cell(int(entry["id"].split("-")[1]), entry["values"])
        cell_dir = study_dir / cell.id
        if not tune.Tuner.can_restore(str(cell_dir)):
            continue  # the study stopped before this cell started
        results = tune.Tuner.restore(str(cell_dir), train_trial).get_results()
        records.extend(records_for_cell(study["base"], study["name"], cell, results))
    return write_study(records, study_dir), records


def summarize(spec_metrics: tuple[str, ...], modes: tuple[str, ...],
              records: list[TrialRecord]) -> str:
    """Best trial per objective and cell, then the failed trials; plain text."""
    lines = []
    cells = sorted({r.cell for r in records})
    for cell in cells:
        rows = [r for r in records if r.cell == cell]
        done = [r for r in rows if r.status != "failed"]
        head = f"[{cell or 'study'}] {len(rows)} trials, {len(rows) - len(done)} failed"
        lines.append(head)
        for metric, mode in zip(spec_metrics, modes, strict=True):
            scored = [r for r in done if r.final.get(metric) is not None]
            if not scored:
                lines.append(f"  best {metric}: no finished trial")
                continue
            best = (max if mode == "max" else min)(scored, key=lambda r: r.final[metric])
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in best.search_params.items())
            test = best.final.get(metric.replace("val_", "test_", 1))
            lines.append(
                f"  best {metric} = {best.final[metric]:.4f} (test {_fmt(test)}) "
                f"trial {best.trial_id} [{params or 'fixed config'}]"
            )
        if len(spec_metrics) > 1:
            front = pareto_front(done, spec_metrics, modes)
            lines.append(f"  Pareto front ({', '.join(spec_metrics)}): "
                         + (", ".join(r.trial_id for r in front) or "empty"))
        for r in rows:
            if r.status == "failed":
                lines.append(f"  FAILED {r.trial_id}: {r.error}")
    return "\n".join(lines)


def pareto_front(records: list[TrialRecord], metrics: tuple[str, ...],
                 modes: tuple[str, ...]) -> list[TrialRecord]:
    """Trials no other trial beats on every objective (ties kept); unscored trials excluded."""
    sign = [1.0 if mode == "max" else -1.0 for mode in modes]
    scored = [r for r in records if all(r.final.get(m) is not None for m in metrics)]
    points = {r.trial_id: [s * r.final[m] for s, m in zip(sign, metrics, strict=True)]
              for r in scored}

    def dominated(a: list[float]) -> bool:
        return any(all(o >= x for o, x in zip(b, a, strict=True)) and b != a
                   for b in points.values())

    return [r for r in scored if not dominated(points[r.trial_id])]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
