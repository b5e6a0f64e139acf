"""The study spec: a validated study as values. :class:`SweepSpec` holds the base config, the
grid axes (each combination is a :class:`Cell` with a search of its own), the searched
parameters (:class:`Param`, with their conditions), and the search, scheduler, resource and
repeat settings; it gives a cell's config and searched parameters, and the study's quick smoke
version. :mod:`lt_ray.tune.parse` builds it from a study YAML. Imports no Ray or Optuna.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from lt_ray.config import ExperimentConfig, set_dotted
from lt_ray.resolution import Resolved
from lt_ray.tune.trial_config import recipe_has_stage, resolve_trial, trial_config


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
        return cell_label(self.values) or "all"


def cell_label(values: dict[str, Any]) -> str:
    """A cell as trials.parquet's ``cell`` column names it: ``key=value,...`` ("" for none)."""
    return ",".join(f"{k}={v}" for k, v in values.items())


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
        """The user's config of ``cell`` (with ``overrides``), before resolution."""
        return trial_config(self.base, cell.values, overrides or {})

    def resolve_cell(self, cell: Cell, overrides: dict[str, Any] | None = None) -> Resolved:
        """The config of ``cell`` (with ``overrides``), resolved and validated."""
        return resolve_trial(self.base, cell.values, overrides or {})

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
        first = self.cells()[0].values
        base = copy.deepcopy(self.base)
        set_dotted(base, "train.epochs", 1)
        stage, prefix = base, ""
        while True:  # every stage, nested ones and those of a method's recipe too
            name = first.get(f"{prefix}method.name", (stage.get("method") or {}).get("name"))
            if not isinstance(stage.get("pretrained"), dict):
                if not recipe_has_stage(name or "ce"):
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
