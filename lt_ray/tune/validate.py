"""Validation of a parsed study spec against the experiment config, before Ray starts.

Every config a trial can get (per grid cell: every choice, the bounds of every range, every
``points_to_evaluate`` point, conditional keys where their ``when`` holds) must be a valid
experiment; the ``when`` conditions must be satisfiable; an ASHA rung must come after the
trials' last schedule phase; an objective shot group must not be empty.
:func:`lt_ray.tune.parse.parse_spec` calls :func:`validate_against_config` last.
"""

from __future__ import annotations

from typing import Any

from lt_ray.config import check_key
from lt_ray.data import expected_class_counts
from lt_ray.errors import ConfigError
from lt_ray.metrics import FEW_MAX_COUNT, MANY_MIN_COUNT, shot_masks
from lt_ray.resolution import Resolved, last_phase_start
from lt_ray.tune.spec import Cell, Param, SweepSpec

SHOT_GROUPS = {"many": f"> {MANY_MIN_COUNT}", "medium": f"{FEW_MAX_COUNT}..{MANY_MIN_COUNT}",
               "few": f"< {FEW_MAX_COUNT}"}  # training images per class of each group


def validate_against_config(spec: SweepSpec) -> None:
    """Every config a trial can get must be a valid experiment, checked per grid cell: every
    value of every ``choice``, both bounds of every range (and a non-integer value inside a
    continuous one), every ``points_to_evaluate`` point; the other searched keys take their first
    value, and a conditional key is set only where its ``when`` holds (as in the search). An
    objective that is an empty shot group (``val_few`` on CIFAR-10-LT) is refused too."""
    cells = spec.cells()
    for cell in cells:  # the fixed configs first: their errors are the plainest
        _check_cell(spec, cell, {}, "")
    _check_conditions(spec)
    for cell in cells:
        active = spec.cell_params(cell)
        first = _assign(active, {})
        shown = ", ".join(f"{k}={v!r}" for k, v in first.items())
        _check_cell(spec, cell, first, f"space at its first values ({shown}): " if first else "")
        for p in active:
            for value in p.candidates():
                chosen = _assign(active, {**p.when, p.key: value})
                if chosen.get(p.key) == value:
                    _check_cell(spec, cell, chosen, _label(p, value))
        for i, point in enumerate(spec.points_to_evaluate):
            fixed = {k: v for k, v in point.items() if k in {p.key for p in active}}
            _check_cell(spec, cell, _assign(active, fixed), f"search.points_to_evaluate[{i}]: ")


def _label(p: Param, value: Any) -> str:
    if p.dist in ("choice", "randint") or value in p.args[:2]:
        return f"space.{p.key}={value!r}: "
    return (f"space.{p.key} ~ {p.dist}{list(p.args)} samples values such as {value!r} (use "
            "randint or choice for an integer key): ")


def _assign(active: list[Param], fixed: dict[str, Any]) -> dict[str, Any]:
    """The searched values of one trial, define-by-run order: ``fixed`` where given, else the
    first value; a conditional key only when its ``when`` holds."""
    chosen: dict[str, Any] = {}
    for p in active:
        if any(chosen.get(k) != v for k, v in p.when.items()):
            continue
        chosen[p.key] = fixed[p.key] if p.key in fixed else p.representative()
    return chosen


def _check_cell(spec: SweepSpec, cell: Cell, values: dict[str, Any], label: str) -> None:
    """The config of ``cell`` with searched ``values`` is valid and its objective shot group is
    not empty; a ConfigError names the cell and starts with ``label``."""
    try:
        resolved = spec.resolve_cell(cell, values)
        cfg = resolved.config
        if spec.scheduler == "asha":
            check_rung(resolved, spec.grace_period)
        groups = [m[len("val_"):] for m in spec.metrics if m[len("val_"):] in SHOT_GROUPS]
        if not groups:
            return
        counts = expected_class_counts(cfg.data)
        masks = shot_masks(counts)
        for group in groups:
            if not masks[group].any():
                d = cfg.data
                raise ConfigError(
                    f"search.metric=val_{group} is always empty: {d.dataset} at imb_factor "
                    f"{d.imb_factor:g} ({d.imb_type}) has no '{group}' class ({SHOT_GROUPS[group]}"
                    f" training images; the classes have {max(counts)} down to {min(counts)}); "
                    "search another metric, e.g. val_hm or val_lr"
                )
    except ConfigError as exc:
        where = f"grid cell {cell.label}: " if cell.values else ""
        raise ConfigError(f"{where}{label}{exc}") from None


def check_rung(resolved: Resolved, grace_period: int) -> None:
    """ASHA's first rung (``grace_period`` epochs) must come after the trial's last schedule
    phase: ranking earlier compares trials on an unfinished schedule (lt_ray.tune.scheduling)."""
    cfg = resolved.config
    epochs = cfg.train.epochs
    first = last_phase_start(resolved) + 1  # one epoch run in the final phase
    if first > epochs:
        raise ConfigError(
            "scheduler: asha cannot rank these trials fairly: their recipe changes until the "
            f"last epoch ({cfg.optim.schedule} lr schedule, loss {cfg.method.loss}), so any "
            "rung selects on an unfinished schedule; remove the scheduler, or use a step lr "
            "schedule"
        )
    if grace_period < first:
        raise ConfigError(
            f"scheduler.grace_period={grace_period}: asha would rank trials at epoch "
            f"{grace_period}, before their last schedule phase (last lr step, DRW switch or loss "
            f"curriculum: from epoch {first} of {epochs}); set scheduler.grace_period >= "
            f"{first}, or remove the scheduler"
        )


def _check_conditions(spec: SweepSpec) -> None:
    """Every ``when`` names a config key that is a grid axis or searched, with a value that key
    can take (else the parameter would never be sampled)."""
    by_key = {p.key: p for p in spec.params}
    for p in spec.params:
        for key, value in p.when.items():
            where = f"space.{p.key}.when: {key}={value!r}"
            try:
                check_key(key)
            except ConfigError as exc:
                raise ConfigError(f"space.{p.key}.when: {exc}") from None
            if key == p.key:
                raise ConfigError(f"{where}: a key cannot be conditional on itself")
            if key in spec.grid:
                if not any(value == v for v in spec.grid[key]):
                    raise ConfigError(f"{where} is not a value of grid.{key} "
                                      f"{spec.grid[key]}; {p.key} would never be sampled")
            elif key in by_key:
                q = by_key[key]
                if q.dist in ("uniform", "loguniform", "quniform"):
                    raise ConfigError(f"{where}: a condition on the continuous {q.dist} key "
                                      f"{key} almost never holds; condition on a choice, randint "
                                      "or grid key")
                if not q.contains(value):
                    raise ConfigError(f"{where} is never sampled by space.{key} "
                                      f"({q.describe()}); {p.key} would never be sampled")
            else:
                raise ConfigError(
                    f"space.{p.key}.when: {[key]} are neither searched nor grid keys"
                )
