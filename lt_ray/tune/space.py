"""Study YAML -> validated :class:`SweepSpec` -> per-cell Optuna define-by-run spaces.

Everything is checked here, before Ray starts: every dotted key exists in the experiment
config, every distribution and bound is valid, the objective is a metric the run reports, the
searcher and scheduler are known. Nothing in this module imports Ray or Optuna at import time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from lt_ray.config import ExperimentConfig, load_yaml
from lt_ray.errors import ConfigError
from lt_ray.metrics import METRICS

#: distribution name -> (number of arguments, Optuna trial suggest call)
DISTRIBUTIONS: dict[str, int] = {"choice": 1, "uniform": 2, "loguniform": 2, "randint": 2,
                                 "quniform": 3}
SAMPLERS = ("tpe", "random", "nsga2")
SCHEDULERS = ("asha", "none")
TOP_KEYS = ("name", "description", "base", "space", "grid", "search", "scheduler", "resources",
            "max_failures")
SEARCH_KEYS = ("algorithm", "sampler", "metric", "mode", "num_samples", "max_concurrent", "seed",
               "points_to_evaluate")
SCHEDULER_KEYS = ("name", "grace_period", "reduction_factor")
RESOURCE_KEYS = ("cpu", "gpu")
OBJECTIVE_METRICS = tuple(f"val_{m}" for m in METRICS)


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``key ~ dist(*args)``, only sampled when ``when`` holds."""

    key: str
    dist: str
    args: tuple[Any, ...]
    when: dict[str, Any] = field(default_factory=dict)

    def representative(self) -> Any:
        """A value inside the distribution (used to validate the key before any search)."""
        if self.dist == "choice":
            return self.args[0][0]
        if self.dist == "randint":
            return int(self.args[0])
        return float(self.args[0])

    def describe(self) -> str:
        cond = f"  when {self.when}" if self.when else ""
        args = list(self.args[0] if self.dist == "choice" else self.args)
        return f"{self.key} ~ {self.dist}{args}{cond}"


@dataclass(frozen=True)
class Cell:
    """One grid cell: fixed values of the comparison axes; gets its own Optuna search."""

    index: int
    values: dict[str, Any]

    @property
    def id(self) -> str:
        return f"cell-{self.index:02d}"

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values.items()) or "all"


@dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str
    base: dict[str, Any]
    params: tuple[Param, ...]
    grid: dict[str, list[Any]]
    sampler: str
    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    num_samples: int
    max_concurrent: int
    seed: int
    points_to_evaluate: tuple[dict[str, Any], ...]
    scheduler: str
    grace_period: int
    reduction_factor: int
    cpu: float
    gpu: float
    max_failures: int

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    def cells(self) -> list[Cell]:
        keys = list(self.grid)
        combos = itertools.product(*(self.grid[k] for k in keys)) if keys else [()]
        return [Cell(i, dict(zip(keys, combo, strict=True))) for i, combo in enumerate(combos)]

    def cell_config(self, cell: Cell, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
        return ExperimentConfig.from_dict(self.base).replace({**cell.values, **(overrides or {})})

    def cell_params(self, cell: Cell) -> list[Param]:
        """Parameters searched in ``cell``: conditions on grid keys are resolved here."""
        out = []
        for p in self.params:
            static = {k: v for k, v in p.when.items() if k in cell.values}
            if any(cell.values[k] != v for k, v in static.items()):
                continue
            dynamic = {k: v for k, v in p.when.items() if k not in cell.values}
            out.append(Param(p.key, p.dist, p.args, dynamic))
        return sorted(out, key=lambda q: bool(q.when))  # conditions look at earlier values

    def shrink_for_smoke(self) -> SweepSpec:
        """2 trials of 1 epoch in the first grid cell: checks a YAML end to end quickly."""
        from dataclasses import replace

        first = self.cells()[0].values
        base = ExperimentConfig.from_dict(self.base).replace({"train.epochs": 1}).to_dict()
        return replace(self, base=base, grid={k: [v] for k, v in first.items()}, num_samples=2,
                       max_concurrent=min(self.max_concurrent, 2), points_to_evaluate=(),
                       grace_period=1)


class DefineByRun:
    """Optuna define-by-run space of one cell (a picklable callable, so Tune can resume it)."""

    def __init__(self, params: list[Param]) -> None:
        self.params = params

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for p in self.params:
            if any(chosen.get(k) != v for k, v in p.when.items()):
                continue
            chosen[p.key] = suggest(trial, p)


def suggest(trial: Any, p: Param) -> Any:
    """Sample ``p`` from an Optuna trial. ``randint`` bounds are inclusive on both ends."""
    a = p.args
    calls = {
        "choice": lambda: trial.suggest_categorical(p.key, list(a[0])),
        "uniform": lambda: trial.suggest_float(p.key, a[0], a[1]),
        "loguniform": lambda: trial.suggest_float(p.key, a[0], a[1], log=True),
        "randint": lambda: trial.suggest_int(p.key, int(a[0]), int(a[1])),
        "quniform": lambda: trial.suggest_float(p.key, a[0], a[1], step=a[2]),
    }
    return calls[p.dist]()


def load_spec(path: str) -> SweepSpec:
    """Read and fully validate a study YAML; any problem is a ConfigError naming the file."""
    raw = load_yaml(path)
    try:
        return parse_spec(raw, default_name=_stem(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _stem(path: str) -> str:
    from pathlib import Path

    return Path(path).stem


def parse_spec(raw: dict[str, Any], default_name: str = "study") -> SweepSpec:
    _check_keys(raw, TOP_KEYS, "")
    name = str(raw.get("name", default_name))
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"name={name!r}: use letters, digits, '-' and '_' only")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError("base: must be a mapping (a partial experiment config)")
    base_cfg = ExperimentConfig.from_dict(base)  # unknown keys / types in base
    params = tuple(_parse_param(k, v) for k, v in (raw.get("space") or {}).items())
    grid = _parse_grid(raw.get("grid") or {})
    both = sorted(set(grid) & {p.key for p in params})
    if both:
        raise ConfigError(f"{', '.join(both)}: a key is either a grid axis or searched, not both")
    search = raw.get("search") or {}
    _check_keys(search, SEARCH_KEYS, "search.")
    algorithm = search.get("algorithm", "optuna")
    if algorithm != "optuna":
        raise ConfigError(f"search.algorithm={algorithm!r} is unknown (known: optuna)")
    sampler = search.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(f"search.sampler={sampler!r} is unknown (known: {', '.join(SAMPLERS)})")
    metrics = _as_tuple(search.get("metric", "val_acc"))
    modes = _as_tuple(search.get("mode", ["max"] * len(metrics)))
    _check_objective(metrics, modes)
    sched = raw.get("scheduler") or {"name": "none"}
    _check_keys(sched, SCHEDULER_KEYS, "scheduler.")
    if sched.get("name", "asha") not in SCHEDULERS:
        raise ConfigError(
            f"scheduler.name={sched.get('name')!r} is unknown (known: {', '.join(SCHEDULERS)})"
        )
    res = raw.get("resources") or {}
    _check_keys(res, RESOURCE_KEYS, "resources.")
    spec = SweepSpec(
        name=name,
        description=str(raw.get("description", "")),
        base=base_cfg.to_dict(),
        params=params,
        grid=grid,
        sampler=sampler,
        metrics=metrics,
        modes=modes,
        num_samples=_positive_int(search.get("num_samples", 8), "search.num_samples"),
        max_concurrent=_positive_int(search.get("max_concurrent", 2), "search.max_concurrent"),
        seed=_int(search.get("seed", 0), "search.seed"),
        points_to_evaluate=tuple(search.get("points_to_evaluate") or ()),
        scheduler=sched.get("name", "asha"),
        grace_period=_positive_int(sched.get("grace_period", 1), "scheduler.grace_period"),
        reduction_factor=_positive_int(sched.get("reduction_factor", 2),
                                       "scheduler.reduction_factor"),
        cpu=_nonneg(res.get("cpu", 1), "resources.cpu"),
        gpu=_nonneg(res.get("gpu", 0), "resources.gpu"),
        max_failures=_int(raw.get("max_failures", 0), "max_failures"),
    )
    if spec.cpu == 0 and spec.gpu == 0:
        raise ConfigError("resources: a trial needs some cpu or gpu")
    if spec.gpu > 1 and not float(spec.gpu).is_integer():
        raise ConfigError(f"resources.gpu={spec.gpu}: use a fraction <= 1 or a whole number")
    validate_against_config(spec)
    return spec


def validate_against_config(spec: SweepSpec) -> None:
    """Every cell's config, with every reachable parameter set, must be a valid experiment."""
    from lt_ray.experiment import validate

    for point in spec.points_to_evaluate:
        if not isinstance(point, dict):
            raise ConfigError("search.points_to_evaluate: give a list of {dotted.key: value}")
        unknown = sorted(set(point) - {p.key for p in spec.params})
        if unknown:
            raise ConfigError(f"search.points_to_evaluate: {unknown} are not keys of space:")
    for cell in spec.cells():
        where = f"grid cell {cell.label}: " if cell.values else ""
        active = spec.cell_params(cell)
        try:
            cfg = spec.cell_config(cell)
            validate(cfg)
            plain = {p.key: p.representative() for p in active if not p.when}
            validate(spec.cell_config(cell, plain))
            for p in active:
                if p.when:
                    validate(spec.cell_config(cell, {**plain, **p.when, p.key: p.representative()}))
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
        for p in active:
            missing = [k for k in p.when if k not in {q.key for q in active}]
            if missing:
                raise ConfigError(
                    f"space.{p.key}.when: {missing} are neither searched nor grid keys"
                )


def _parse_param(key: str, value: Any) -> Param:
    if not isinstance(value, dict):
        raise ConfigError(f"space.{key}: give one distribution, e.g. {{uniform: [0.5, 4.0]}}")
    when = value.get("when") or {}
    if not isinstance(when, dict):
        raise ConfigError(f"space.{key}.when: give a mapping {{dotted.key: value}}")
    dists = [k for k in value if k != "when"]
    if len(dists) != 1 or dists[0] not in DISTRIBUTIONS:
        raise ConfigError(
            f"space.{key}: unknown distribution {dists or '(none)'}; "
            f"use one of {', '.join(DISTRIBUTIONS)}"
        )
    dist = dists[0]
    args = value[dist]
    if dist == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"space.{key}.choice: give a non-empty list of values")
        return Param(key, dist, (tuple(args),), when)
    if not isinstance(args, list) or len(args) != DISTRIBUTIONS[dist]:
        raise ConfigError(f"space.{key}.{dist}: give a list of {DISTRIBUTIONS[dist]} numbers")
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"space.{key}.{dist}: bounds must be numbers, got {args}")
    lo, hi = args[0], args[1]
    if not lo < hi:
        raise ConfigError(f"space.{key}.{dist}: lower bound {lo} must be below upper bound {hi}")
    if dist == "loguniform" and lo <= 0:
        raise ConfigError(f"space.{key}.loguniform: bounds must be > 0, got {lo}")
    if dist == "randint" and not (float(lo).is_integer() and float(hi).is_integer()):
        raise ConfigError(f"space.{key}.randint: bounds must be integers, got {args}")
    if dist == "quniform" and not args[2] > 0:
        raise ConfigError(f"space.{key}.quniform: step must be > 0, got {args[2]}")
    return Param(key, dist, tuple(args), when)


def _parse_grid(grid: Any) -> dict[str, list[Any]]:
    if not isinstance(grid, dict):
        raise ConfigError("grid: must map dotted keys to lists of values")
    out = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: give a non-empty list of values")
        out[key] = values
    return out


def _check_objective(metrics: tuple[str, ...], modes: tuple[str, ...]) -> None:
    if len(metrics) != len(modes):
        raise ConfigError(f"search.mode: give one mode per metric ({len(metrics)} metrics)")
    for m in metrics:
        if m in OBJECTIVE_METRICS:
            continue
        if m.startswith(("test_", "fulltest_")):
            raise ConfigError(
                f"search.metric={m!r}: searching on the test split is test-set selection; "
                f"search a val_* metric ({', '.join(OBJECTIVE_METRICS)}); tables report test_*"
            )
        raise ConfigError(
            f"search.metric={m!r} is not a metric the runs report "
            f"(known: {', '.join(OBJECTIVE_METRICS)})"
        )
    bad = [m for m in modes if m not in ("max", "min")]
    if bad:
        raise ConfigError(f"search.mode={bad[0]!r}: use max or min")


def _check_keys(section: Any, known: tuple[str, ...], prefix: str) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the study'}: must be a mapping")
    import difflib

    for key in section:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown key '{prefix}{key}'{hint} (known: {', '.join(known)})")


def _as_tuple(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    return value


def _positive_int(value: Any, key: str) -> int:
    if _int(value, key) <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")
    return value


def _nonneg(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or (
        isinstance(value, float) and math.isinf(value)
    ):
        raise ConfigError(f"{key} must be a number >= 0, got {value!r}")
    return float(value)
