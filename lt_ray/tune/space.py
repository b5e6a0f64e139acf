"""Study YAML -> validated :class:`SweepSpec` -> per-cell Optuna define-by-run spaces.

Everything is checked here, before Ray starts: every dotted key exists in the experiment
config, every distribution and bound is valid, the objective is a metric the run reports, the
searcher and scheduler are known. Nothing in this module imports Ray or Optuna at import time.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from lt_ray.config import ExperimentConfig, check_key, load_yaml, set_dotted
from lt_ray.errors import ConfigError
from lt_ray.metrics import FEW_MAX_COUNT, MANY_MIN_COUNT, METRICS

#: distribution name -> (number of arguments, Optuna trial suggest call)
DISTRIBUTIONS: dict[str, int] = {"choice": 1, "uniform": 2, "loguniform": 2, "randint": 2,
                                 "quniform": 3}
SAMPLERS = ("tpe", "random", "nsga2")
SCHEDULERS = ("asha", "none")
TOP_KEYS = ("name", "description", "base", "space", "grid", "search", "scheduler", "repeat",
            "resources",
            "max_failures")
SEARCH_KEYS = ("algorithm", "sampler", "metric", "mode", "num_samples", "max_concurrent",
               "max_concurrent_per_cell", "seed",
               "points_to_evaluate")
SCHEDULER_KEYS = ("name", "grace_period", "reduction_factor")
RESOURCE_KEYS = ("cpu", "gpu")
OBJECTIVE_METRICS = tuple(f"val_{m}" for m in METRICS)
SHOT_GROUPS = {"many": f"> {MANY_MIN_COUNT}", "medium": f"{FEW_MAX_COUNT}..{MANY_MIN_COUNT}",
               "few": f"< {FEW_MAX_COUNT}"}  # training images per class of each group
CATEGORICAL = (str, int, float, bool, type(None))  # what an Optuna choice can hold


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``key ~ dist(*args)``, only sampled when ``when`` holds."""

    key: str
    dist: str
    args: tuple[Any, ...]
    when: dict[str, Any] = field(default_factory=dict)

    def representative(self) -> Any:
        """A value inside the distribution (used to validate the key before any search)."""
        return self.candidates()[0]

    def candidates(self) -> list[Any]:
        """The values validated before any search: every choice, or both bounds plus, for a
        continuous distribution, one non-integer value inside (an integer key refuses it)."""
        if self.dist == "choice":
            return list(self.args[0])
        lo, hi = self.args[0], self.args[1]
        if self.dist == "randint":
            return [int(lo), int(hi)]
        out = [float(lo), float(hi)]
        if self.dist == "quniform":
            inside = lo + self.args[2]
        elif self.dist == "loguniform":
            inside = math.exp(math.log(lo) / 2 + math.log(hi) / 2)
        else:
            inside = lo / 2 + hi / 2
        if float(inside).is_integer() and self.dist != "quniform":
            inside = math.nextafter(inside, hi)
        if lo < inside < hi:
            out.append(float(inside))
        return out

    def contains(self, value: Any) -> bool:
        """Whether the distribution can produce ``value`` (for points_to_evaluate)."""
        if self.dist == "choice":
            return any(value == v for v in self.args[0])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.dist == "randint" and not float(value).is_integer():
            return False
        return self.args[0] <= value <= self.args[1]

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
    max_concurrent: int  # trials in flight over the whole study
    max_concurrent_per_cell: int | None  # optional cap per grid cell
    seed: int
    points_to_evaluate: tuple[dict[str, Any], ...]
    scheduler: str
    grace_period: int
    reduction_factor: int
    cpu: float
    gpu: float
    max_failures: int
    repeat_top_k: int = 0  # after a cell's search: re-run its best k configs ...
    repeat_seeds: tuple[int, ...] = ()  # ... once with each of these seeds

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
        """2 trials of 1 epoch in the first grid cell, on 1-epoch stage-1 models: checks a YAML
        end to end quickly (a searched ``train.epochs`` becomes 1 too)."""
        from dataclasses import replace

        from lt_ray.config import recipe_defaults

        first = self.cells()[0].values
        base = copy.deepcopy(self.base)
        set_dotted(base, "train.epochs", 1)
        stage, prefix = base, ""
        while True:  # every stage, nested ones and those of a method's recipe too
            name = first.get(f"{prefix}method.name", (stage.get("method") or {}).get("name"))
            if not isinstance(stage.get("pretrained"), dict):
                if "pretrained" not in recipe_defaults(name or "ce"):
                    break
                stage["pretrained"] = {}
            stage, prefix = stage["pretrained"], f"{prefix}pretrained."
            set_dotted(stage, "train.epochs", 1)
        grid = {k: [v] for k, v in first.items()}
        for key in [k for k in grid if k.startswith("pretrained.") and k.endswith(".epochs")]:
            grid[key] = [1]
        params = tuple(Param(p.key, "choice", ((1,),), p.when) if p.key == "train.epochs" else p
                       for p in self.params)
        return replace(self, base=base, grid=grid, params=params, num_samples=2,
                       max_concurrent=min(self.max_concurrent, 2), points_to_evaluate=(),
                       grace_period=1, scheduler="none", repeat_top_k=0, repeat_seeds=())


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


def load_spec(path: str, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and fully validate a study YAML; any problem is a ConfigError naming the file.

    ``overrides`` (``lt-ray sweep --set``) are dotted changes of the study's ``base``.
    """
    raw = load_yaml(path)
    try:
        return parse_spec(raw, default_name=_stem(path), overrides=overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _stem(path: str) -> str:
    from pathlib import Path

    return Path(path).stem


def parse_spec(
    raw: dict[str, Any], default_name: str = "study", overrides: dict[str, Any] | None = None
) -> SweepSpec:
    """Validate a study mapping; ``overrides`` (``--set``) are dotted changes of its ``base``,
    or of its study sections: ``grid.AXIS=[...]`` (an existing axis), ``search.KEY``,
    ``repeat.KEY``, ``resources.KEY``, ``scheduler.KEY``."""
    _check_keys(raw, TOP_KEYS, "")
    raw, overrides = _apply_study_overrides(raw, overrides or {})
    name = str(raw.get("name", default_name))
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"name={name!r}: use letters, digits, '-' and '_' only")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError("base: must be a mapping (a partial experiment config)")
    space = raw.get("space") or {}
    if not isinstance(space, dict):
        raise ConfigError("space: must map dotted keys to distributions, e.g. "
                          "{optim.lr: {loguniform: [0.01, 0.1]}}")
    params = tuple(_parse_param(k, v) for k, v in space.items())
    grid = _parse_grid(raw.get("grid") or {})
    both = sorted(set(grid) & {p.key for p in params})
    if both:
        raise ConfigError(f"{', '.join(both)}: a key is either a grid axis or searched, not both")
    base = _apply_overrides(base, overrides or {}, grid, params)
    ExperimentConfig.from_dict(base)  # unknown keys / types in base
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
        base=base,  # the user's values: each cell layers them on its own method's recipe
        params=params,
        grid=grid,
        sampler=sampler,
        metrics=metrics,
        modes=modes,
        num_samples=_positive_int(search.get("num_samples", 8), "search.num_samples"),
        max_concurrent=_positive_int(search.get("max_concurrent", 2), "search.max_concurrent"),
        max_concurrent_per_cell=None if search.get("max_concurrent_per_cell") is None else
        _positive_int(search["max_concurrent_per_cell"], "search.max_concurrent_per_cell"),
        seed=_int(search.get("seed", 0), "search.seed"),
        points_to_evaluate=_parse_points(search.get("points_to_evaluate"), params),
        scheduler=sched.get("name", "asha"),
        grace_period=_positive_int(sched.get("grace_period", 1), "scheduler.grace_period"),
        reduction_factor=_positive_int(sched.get("reduction_factor", 2),
                                       "scheduler.reduction_factor"),
        cpu=_nonneg(res.get("cpu", 1), "resources.cpu"),
        gpu=_nonneg(res.get("gpu", 0), "resources.gpu"),
        max_failures=_nonneg_int(raw.get("max_failures", 2), "max_failures",
                                 "retries of a trial lost with a node; -1, retry forever, is not "
                                 "allowed"),
    )
    staged = [p.key for p in params if p.key.split(".")[0] == "pretrained"]
    if staged:
        raise ConfigError(
            f"space.{staged[0]}: a pretrained.* key may be a grid axis, never searched: each "
            "value is a stage-1 model trained once before the search; move it to grid:"
        )
    inherited = [p.key for p in params if p.key == "seed" or p.key.startswith("data.")]
    if inherited and any(spec.cell_config(c).pretrained is not None for c in spec.cells()):
        raise ConfigError(
            f"space.{inherited[0]}: the pretrained: stage inherits data and seed, so searching "
            "it would need a new stage-1 model per trial; make it a grid axis"
        )
    if spec.scheduler == "asha" and any(p.key == "train.epochs" for p in params):
        raise ConfigError(
            "scheduler: asha with train.epochs in space: trials of one cell would reach a rung "
            "at different points of their schedules; make train.epochs a grid axis (each cell "
            "gets its own asha with max_t = its epochs) or remove the scheduler"
        )
    spec = _with_repeats(spec, raw.get("repeat"))
    if spec.cpu == 0 and spec.gpu == 0:
        raise ConfigError("resources: a trial needs some cpu or gpu")
    if spec.gpu > 1 and not float(spec.gpu).is_integer():
        raise ConfigError(f"resources.gpu={spec.gpu}: use a fraction <= 1 or a whole number")
    validate_against_config(spec)
    return spec


REPEAT_KEYS = ("top_k", "seeds")


def _with_repeats(spec: SweepSpec, raw: Any) -> SweepSpec:
    """``repeat: {top_k: 1, seeds: [1, 2, 3]}``: after a cell's search, its ``top_k`` best
    configurations (by the first objective, on val) are run again with each seed."""
    from dataclasses import replace

    if raw is None:
        return spec
    _check_keys(raw, REPEAT_KEYS, "repeat.")
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32 for x in seeds):
        raise ConfigError(f"repeat.seeds: give a non-empty list of seeds (integers >= 0), got "
                          f"{seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"repeat.seeds: {seeds} repeats a seed")
    top_k = _positive_int(raw.get("top_k", 1), "repeat.top_k")
    if top_k > spec.num_samples:
        raise ConfigError(f"repeat.top_k={top_k} exceeds search.num_samples="
                          f"{spec.num_samples}: a cell has no more configurations to repeat")
    if "seed" in spec.grid or any(p.key == "seed" for p in spec.params):
        raise ConfigError("repeat: seed is a grid axis or searched; repeats set the seed "
                          "themselves (use one or the other)")
    return replace(spec, repeat_top_k=top_k, repeat_seeds=tuple(seeds))


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
    from lt_ray.data import expected_class_counts
    from lt_ray.experiment import validate
    from lt_ray.metrics import shot_masks

    try:
        cfg = spec.cell_config(cell, values)
        validate(cfg)
        if spec.scheduler == "asha":
            check_rung(cfg, spec.grace_period)
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


def check_rung(cfg: ExperimentConfig, grace_period: int) -> None:
    """ASHA's first rung (``grace_period`` epochs) must come after the trial's last schedule
    phase: ranking earlier compares trials on an unfinished schedule (lt_ray.tune.scheduling)."""
    from lt_ray.experiment import last_phase_start

    epochs = cfg.train.epochs
    first = last_phase_start(cfg) + 1  # one epoch run in the final phase
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


STUDY_SECTIONS = ("grid", "search", "repeat", "resources", "scheduler")  # --set grid.X=[...]


def _apply_study_overrides(raw: dict[str, Any], overrides: dict[str, Any]
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply the ``--set`` keys of the study sections to a copy of ``raw``; the rest are
    returned for the base. The sections' own checks then validate the values."""
    out = copy.deepcopy(raw)
    rest = {}
    for key, value in overrides.items():
        section, _, sub = key.partition(".")
        if section not in STUDY_SECTIONS:
            rest[key] = value
            continue
        if not sub:
            raise ConfigError(f"--set {key}: name a key inside it, e.g. --set {section}.KEY=...")
        node = out.get(section) or {}
        if not isinstance(node, dict):
            raise ConfigError(f"{section}: must be a mapping")
        if section == "grid":
            if sub not in node:
                known = ", ".join(node) or "none"
                raise ConfigError(f"--set {key}: {sub} is not a grid axis of this study "
                                  f"(axes: {known}); edit the study file to add one")
            if not isinstance(value, list):
                value = [value]
        node = {**node, sub: value}
        out[section] = node
    return out, rest


def _apply_overrides(base: dict[str, Any], overrides: dict[str, Any],
                     grid: dict[str, list[Any]], params: tuple[Param, ...]) -> dict[str, Any]:
    """``base`` with the ``--set`` overrides applied; a grid axis or a searched key (or a section
    holding one) cannot be overridden."""
    out = copy.deepcopy(base)
    taken = {k: f"a grid axis (grid.{k})" for k in grid}
    taken.update({p.key: f"searched (space.{p.key})" for p in params})
    for key, value in overrides.items():
        try:
            check_key(key)
        except ConfigError as exc:
            raise ConfigError(f"--set {key}: {exc} (--set changes the study's base config; "
                              "edit the study file for the other sections)") from None
        for other, what in taken.items():
            if key == other or other.startswith(f"{key}.") or key.startswith(f"{other}."):
                raise ConfigError(
                    f"--set {key}: {other} is {what} in this study, so a fixed value would be "
                    f"overwritten; edit the study file (or remove {other} from it) instead"
                )
        set_dotted(out, key, value)
    return out


def _parse_points(points: Any, params: tuple[Param, ...]) -> tuple[dict[str, Any], ...]:
    """``search.points_to_evaluate``: a list of ``{searched key: value}`` inside the space."""
    if points is None:
        return ()
    if not isinstance(points, list):
        raise ConfigError("search.points_to_evaluate: give a list of {dotted.key: value}")
    by_key = {p.key: p for p in params}
    for i, point in enumerate(points):
        where = f"search.points_to_evaluate[{i}]"
        if not isinstance(point, dict) or not point:
            raise ConfigError(f"{where}: give a non-empty mapping {{dotted.key: value}}, "
                              f"got {point!r}")
        for key, value in point.items():
            if key not in by_key:
                raise ConfigError(f"{where}: {key!r} is not a key of space: "
                                  f"({', '.join(by_key) or 'nothing is searched'})")
            if not by_key[key].contains(value):
                raise ConfigError(f"{where}: {key}={value!r} is outside space.{key} "
                                  f"({by_key[key].describe()})")
    return tuple(points)


def _parse_param(key: Any, value: Any) -> Param:
    if not isinstance(key, str):
        raise ConfigError(f"space: keys are dotted config keys (strings), got {key!r}")
    if not isinstance(value, dict):
        raise ConfigError(f"space.{key}: give one distribution, e.g. {{uniform: [0.5, 4.0]}}")
    when = value.get("when") or {}
    if not isinstance(when, dict) or not all(isinstance(k, str) for k in when):
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
        bad = [a for a in args if not isinstance(a, CATEGORICAL)]
        if bad:
            raise ConfigError(f"space.{key}.choice: values must be numbers, strings, true/false "
                              f"or null (an Optuna categorical), got {bad[0]!r}")
        return Param(key, dist, (tuple(args),), when)
    if not isinstance(args, list) or len(args) != DISTRIBUTIONS[dist]:
        raise ConfigError(f"space.{key}.{dist}: give a list of {DISTRIBUTIONS[dist]} numbers")
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
               for a in args):
        raise ConfigError(f"space.{key}.{dist}: bounds must be finite numbers, got {args}")
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
        if not isinstance(key, str):
            raise ConfigError(f"grid: keys are dotted config keys (strings), got {key!r}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: give a non-empty list of values")
        out[key] = values
    return out


def _check_objective(metrics: tuple[Any, ...], modes: tuple[Any, ...]) -> None:
    if not metrics:
        raise ConfigError(f"search.metric: give a metric name ({', '.join(OBJECTIVE_METRICS)})")
    if len(metrics) != len(modes):
        raise ConfigError(f"search.mode: give one mode per metric ({len(metrics)} metrics)")
    for m in metrics:
        if m in OBJECTIVE_METRICS:
            continue
        if isinstance(m, str) and m.startswith(("test_", "fulltest_")):
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
            raise ConfigError(
                f"unknown key {prefix + str(key)!r}{hint} (known: {', '.join(known)})"
            )


def _as_tuple(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def _int(value: Any, key: str) -> int:
    """An integer (``1e3`` and ``8.0`` are accepted as 1000 and 8)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    return value


def _nonneg_int(value: Any, key: str, what: str) -> int:
    number = _int(value, key)
    if number < 0:
        raise ConfigError(f"{key} must be >= 0 ({what}), got {value}")
    return number


def _positive_int(value: Any, key: str) -> int:
    number = _int(value, key)
    if number <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")
    return number


def _nonneg(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or (
        isinstance(value, float) and math.isinf(value)
    ):
        raise ConfigError(f"{key} must be a number >= 0, got {value!r}")
    return float(value)
