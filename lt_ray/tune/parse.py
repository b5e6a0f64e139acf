"""Study YAML -> :class:`~lt_ray.tune.spec.SweepSpec`: the sections parsed and checked, the
``lt-ray sweep --set`` overrides (of the base config and of the study sections) applied.

Every section is checked here, before Ray starts: every dotted key exists, every distribution
and bound is valid, the objective is a metric the run reports, the searcher and scheduler are
known. :func:`parse_spec` ends by checking every config a trial can get against the experiment
config (:mod:`lt_ray.tune.validate`). Nothing in this module imports Ray or Optuna.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from lt_ray.config import check_key, load_yaml, set_dotted
from lt_ray.errors import ConfigError
from lt_ray.metrics import METRICS
from lt_ray.resolution import layered
from lt_ray.tune.spec import Param, SweepSpec
from lt_ray.tune.trial_config import base_config
from lt_ray.tune.validate import validate_against_config

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
CATEGORICAL = (str, int, float, bool, type(None))  # what an Optuna choice can hold

def load_spec(path: str, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and fully validate a study YAML; any problem is a ConfigError naming the file.

    ``overrides`` (``lt-ray sweep --set``) are dotted changes of the study's ``base``.
    """
    raw = load_yaml(path)
    try:
        return parse_spec(raw, default_name=_stem(path), overrides=overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a folder name in any storage


def check_study_name(name: Any, where: str = "name") -> str:
    """A study name is a short slug: 1 to 64 ASCII letters, digits, '-' and '_', starting with
    a letter or digit (it names ``<storage>/<name>``: no path, no space); the same rule for the
    YAML's ``name:`` and ``--name``."""
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise ConfigError(f"{where}={shown} is not a study name: use 1 to 64 ASCII letters, "
                          "digits, '-' and '_', starting with a letter or digit")
    return name


def _stem(path: str) -> str:
    return Path(path).stem


def parse_spec(
    raw: dict[str, Any], default_name: str = "study", overrides: dict[str, Any] | None = None
) -> SweepSpec:
    """Validate a study mapping; ``overrides`` (``--set``) are dotted changes of its ``base``,
    or of its study sections: ``grid.AXIS=[...]`` (an existing axis), ``search.KEY``,
    ``repeat.KEY``, ``resources.KEY``, ``scheduler.KEY``."""
    _check_keys(raw, TOP_KEYS, "")
    raw, overrides = _apply_study_overrides(raw, overrides or {})
    name = check_study_name(raw.get("name", default_name), "name" if "name" in raw else
                            "the study file's name (its default study name)")
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
    base_config(base)  # unknown keys / types in base
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
    if inherited and any(layered(spec.cell_config(c)).pretrained is not None for c in spec.cells()):
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
            axis = node[sub] if isinstance(node[sub], list) else [node[sub]]
            extra = [v for v in value if not any(v == old for old in axis)]
            if extra:
                raise ConfigError(
                    f"--set {key}: {extra} {'is' if len(extra) == 1 else 'are'} not among the "
                    f"axis's values {axis}; --set grid.AXIS keeps some of an existing axis's "
                    "values (edit the study file to add values)")
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
    if not all(_finite(a) for a in args):
        raise ConfigError(f"space.{key}.{dist}: bounds must be finite numbers, got "
                          f"{_shown(args)}")
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


def _finite(value: Any) -> bool:
    """A number (not a bool), finite and within the float range (a YAML int may not be)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _nonneg(value: Any, key: str) -> float:
    if not _finite(value) or not value >= 0:
        raise ConfigError(f"{key} must be a finite number >= 0, got {_shown(value)}")
    return float(value)
