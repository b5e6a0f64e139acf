"""One Tune searcher for the whole study: it routes suggestions to one Optuna search per cell.

A study is one ``Tuner``: every grid cell's trials share the cluster up to the study-wide
``search.max_concurrent`` (Tune's ``max_concurrent_trials``), while each cell keeps its own
Optuna study, seeded with ``search.seed + cell index`` and capped by the optional
``search.max_concurrent_per_cell``. The cell of a trial travels in its config under
:data:`CELL_KEY`. :func:`make_search` builds it from a study spec.

What Optuna is told at the end of a trial (:class:`CellOptunaSearch`):

* a trial that reported :data:`FAILED_KEY` (the trainable caught an error in the run: NaN loss,
  missing data, ...) is ``FAIL``;
* a trial that a scheduler stopped (:data:`STOPPED_KEY`, set by :class:`MarkStoppedTrials` from
  Tune's own ``done`` flag) is ``PRUNED``, not ``COMPLETE`` with an early value;
* every other trial is ``COMPLETE`` with its last reported objective(s).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from lt_ray.tune.space import DefineByRun
from lt_ray.tune.spec import Cell, SweepSpec

log = logging.getLogger(__name__)

CELL_KEY = "_cell"  # the trial's grid-cell index in its config
REPEAT_KEY = "_repeat_of"  # a seed repeat: the trial id of the searched trial it re-runs
FAILED_KEY = "trial_error"  # reported by the trainable when the run raised; the message
STOPPED_KEY = "stopped_early"  # set on the result a scheduler stopped the trial at


class CellOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna FAIL for failed and PRUNED for scheduler-stopped trials.

    Uses OptunaSearch's ``_ot_trials``/``_ot_study``/``_completed_trials`` (Ray 2.60, pinned).
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if FAILED_KEY in result:
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        import optuna

        result = result or {}
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        state = None
        if error or result.get(FAILED_KEY):
            state = optuna.trial.TrialState.FAIL
        elif result.get(STOPPED_KEY):
            state = optuna.trial.TrialState.PRUNED
        if state is None:
            super().on_trial_complete(trial_id, result=result, error=False)
            return
        try:
            self._ot_study.tell(self._ot_trials[trial_id], state=state)
        except Exception as exc:  # noqa: BLE001 - Optuna refuses e.g. PRUNED without a value
            log.warning("optuna: could not record trial %s as %s: %s", trial_id, state, exc)
        self._completed_trials.add(trial_id)


class CellSearch(Searcher):
    """Tune searcher over all grid cells; each cell has its own Optuna search (or none).

    Seed repeats: once all of a cell's search trials have ended, its ``repeat_top_k`` best
    completed trials (by the first objective) are suggested again, once per seed of
    ``repeat_seeds``, with ``seed`` set and :data:`REPEAT_KEY` naming the source trial. They
    are trials like any other (resumable, in Parquet) but do not feed the Optuna search.

    Args:
        searchers: per cell index, its searcher (None: a fixed config, every trial = {}).
        budgets: per cell index, the number of search trials to run.
        per_cell_cap: at most this many live trials per cell (None: only the study-wide cap).
        repeat_top_k, repeat_seeds: the seed repeats (0, (): none).
        metric, mode: the objective(s), as given to Tune.
    """

    def __init__(
        self,
        searchers: dict[int, Searcher | None],
        budgets: dict[int, int],
        *,
        per_cell_cap: int | None,
        metric: str | list[str],
        mode: str | list[str],
        repeat_top_k: int = 0,
        repeat_seeds: tuple[int, ...] = (),
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self._searchers = searchers
        self._budgets = dict(budgets)
        self._per_cell_cap = per_cell_cap
        self._suggested = dict.fromkeys(budgets, 0)
        self._live: dict[int, set[str]] = {i: set() for i in budgets}
        self._cell_of: dict[str, int] = {}
        self._objective = (metric[0] if isinstance(metric, list) else metric,
                           mode[0] if isinstance(mode, list) else mode)
        self._repeat_top_k = repeat_top_k
        self._repeat_seeds = tuple(repeat_seeds)
        self._configs: dict[str, dict] = {}  # searched trial -> its suggested config
        self._scores: dict[int, dict[str, float]] = {i: {} for i in budgets}  # completed
        self._repeats: dict[int, list[dict] | None] = dict.fromkeys(budgets)  # None: not yet

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        return True  # objective and space are fixed per cell at construction

    def suggest(self, trial_id: str) -> dict | None:
        for i, queue in self._repeats.items():  # repeats of a finished cell go first
            if queue:
                config = queue.pop(0)
                self._live[i].add(trial_id)
                self._cell_of[trial_id] = i
                return config
        open_cells = [i for i in self._budgets if self._suggested[i] < self._budgets[i]]
        if not open_cells:
            waiting = self._repeat_top_k and any(q is None for q in self._repeats.values())
            return None if waiting else Searcher.FINISHED
        # least busy cell first, so that every cell gets trials in flight
        for i in sorted(open_cells, key=lambda c: (len(self._live[c]), self._suggested[c], c)):
            if self._per_cell_cap is not None and len(self._live[i]) >= self._per_cell_cap:
                continue
            searcher = self._searchers[i]
            config = {} if searcher is None else searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                continue
            self._suggested[i] += 1
            self._live[i].add(trial_id)
            self._cell_of[trial_id] = i
            self._configs[trial_id] = {**config, CELL_KEY: i}
            return {**config, CELL_KEY: i}
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self._searcher_of(trial_id)
        if searcher is not None and trial_id in self._configs:  # not for seed repeats
            searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        cell = self._cell_of.get(trial_id)
        if cell is None:
            return
        self._live[cell].discard(trial_id)
        if trial_id not in self._configs:
            return  # a seed repeat: not part of the search
        metric, _ = self._objective
        value = (result or {}).get(metric)
        completed = not (error or (result or {}).get(FAILED_KEY) or
                         (result or {}).get(STOPPED_KEY))
        if completed and isinstance(value, (int, float)) and value == value:
            self._scores[cell][trial_id] = float(value)
        searcher = self._searchers[cell]
        if searcher is not None:
            searcher.on_trial_complete(trial_id, result=result, error=error)
        self._queue_repeats(cell)

    def _queue_repeats(self, cell: int) -> None:
        """Once the cell's search is over, queue the seed repeats of its best trials."""
        searched_live = [t for t in self._live[cell] if t in self._configs]
        if (not self._repeat_top_k or self._repeats[cell] is not None
                or self._suggested[cell] < self._budgets[cell] or searched_live):
            return
        _, mode = self._objective
        sign = -1.0 if mode == "max" else 1.0  # best first; a tie goes to the earlier trial id
        ranked = sorted(self._scores[cell].items(), key=lambda kv: (sign * kv[1], kv[0]))
        self._repeats[cell] = [
            {**self._configs[source], "seed": seed, REPEAT_KEY: source}
            for source, _ in ranked[: self._repeat_top_k] for seed in self._repeat_seeds
        ]

    def _searcher_of(self, trial_id: str) -> Searcher | None:
        cell = self._cell_of.get(trial_id)
        return None if cell is None else self._searchers[cell]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class MarkStoppedTrials(Callback):
    """Marks the result at which a scheduler stopped a trial with :data:`STOPPED_KEY`.

    Tune sets ``done=True`` on a regular result only when its scheduler (or a stopper; lt-ray
    uses none) decides STOP; a trial that ends on its own finishes with a separate duplicate
    result that callbacks do not see. The mark reaches the trial's last result, Optuna (as
    PRUNED) and ``trials.parquet`` (status ``early_stopped``).
    """

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if result.get("done"):
            result[STOPPED_KEY] = True


def make_cell_searcher(spec: SweepSpec, cell: Cell,
                       optuna_storage: str | None) -> CellOptunaSearch | None:
    """The Optuna search of one cell (None for a cell with nothing to search)."""
    params = spec.cell_params(cell)
    if not params:
        return None
    import optuna

    seed = spec.seed + cell.index
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
    }
    storage = None
    if optuna_storage:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(Path(optuna_storage).resolve())))
    objective: dict[str, Any] = {"metric": spec.metrics[0], "mode": spec.modes[0]}
    if spec.multi_objective:
        objective = {"metric": list(spec.metrics), "mode": list(spec.modes)}
    return CellOptunaSearch(
        space=DefineByRun(params), sampler=samplers[spec.sampler](),
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
        storage=storage, study_name=f"{spec.name}-{cell.id}" if storage else None, **objective,
    )


def make_search(spec: SweepSpec, optuna_storage: str | None) -> CellSearch:
    """The study's searcher: one Optuna search per cell, the seed repeats after it."""
    cells = spec.cells()
    objective: dict[str, Any] = {"metric": spec.metrics[0], "mode": spec.modes[0]}
    if spec.multi_objective:
        objective = {"metric": list(spec.metrics), "mode": list(spec.modes)}
    return CellSearch(
        {c.index: make_cell_searcher(spec, c, optuna_storage) for c in cells},
        {c.index: spec.num_samples for c in cells},
        per_cell_cap=spec.max_concurrent_per_cell,
        repeat_top_k=spec.repeat_top_k, repeat_seeds=spec.repeat_seeds, **objective,
    )
