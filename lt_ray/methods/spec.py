"""MethodSpec: the typed registry record of a method (what resolution and the orchestrator know
of it before anything is built).

A method registers one frozen :class:`MethodSpec`; an unknown field is a ``TypeError`` and a
malformed one a ``ValueError`` at import. Its factory ``build(cfg, ctx, args, base)`` receives
the resolved config (every recipe value explicit: no fallbacks), the dataset context, its typed
``method.args`` and, for a stage-2 method, its stage-1 :class:`Method` built by the
orchestrator (``None`` otherwise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lt_ray.config import ExperimentConfig, from_dict
from lt_ray.context import LTContext
from lt_ray.losses import LOSSES
from lt_ray.methods.base import Method, NoArgs
from lt_ray.models import HEADS
from lt_ray.registry import Registry
from lt_ray.results.schema import BASE_FAMILY  # Output.family: the row goes with its stage's
from lt_ray.rules import RULES

Build = Callable[[ExperimentConfig, LTContext, Any, "Method | None"], Method]
StageCheck = Callable[[ExperimentConfig, ExperimentConfig], None]


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """The loss, train rule and head a standard method trains with (config may override)."""

    loss: str
    rule: str = "none"
    head: str = "linear"


#: The groups of a comparison table's rows, in table order (``MethodSpec.family``).
FAMILIES: tuple[str, ...] = ("simple methods", "earlier improvements", "GML plug-in")


@dataclass(frozen=True, kw_only=True)
class Output:
    """One named output of a method's ``predict`` and what it means to a reader.

    ``row`` is how a comparison table names it: a template over ``{base}`` (the row name of the
    stage's reported output) and ``{method}`` (this method's title); ``""`` = the title.
    ``family`` is the table group of that row: one of :data:`FAMILIES`, :data:`BASE_FAMILY`,
    or ``""`` for the method's own."""

    name: str
    label: str  # a short name for figure legends
    meaning: str
    row: str = ""
    family: str = ""


@dataclass(frozen=True)
class Row:
    """A row of a comparison table as a reader names it, and its group (:data:`FAMILIES`)."""

    name: str
    family: str


@dataclass(frozen=True, kw_only=True)
class Stage:
    """What a stage-2 method stands on: its ``pretrained:`` model."""

    hint: str = "ce"  # the stage-1 method an error message suggests
    check: StageCheck | None = None  # refuses an unfit stage 1 (cfg, stage cfg) -> ConfigError
    #: True: the method's ``encode`` is its stage's (a frozen backbone, BN included), so
    #: per-base products computed for the stage serve it too (a chain of GML stages).
    shares_backbone: bool = False


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """The record of one registered method.

    Attributes:
        name: the registry key (``method.name``).
        build: the factory ``(cfg, ctx, args, base) -> Method`` on a resolved config.
        doc: one line for ``lt-ray list``.
        args: the frozen dataclass of ``method.args`` (its ``__post_init__`` range-checks).
        recipe: loss/rule/head of a standard method; None: the method has its own loss and
            heads (``method.loss``/``rule``/``model.head`` are refused).
        defaults: further recipe values (nested config), layered under YAML and ``--set``; a
            default ``pretrained:`` stage may be among them.
        stage: None for a method trained from scratch; else what its stage 1 must be.
        resolve: fills data-dependent defaults the user left unset (MiSLAS per dataset/IF).
        validate: checks across config sections (PaCo: queue size vs batch).
        phase_end: the 0-indexed epoch of the method's last loss phase (RIDE's DRW switch).
        outputs: the named outputs of ``predict`` and their meaning; () for one tensor.
        primary_output: which output the plain ``{split}_{metric}`` names report, from the
            typed args (None: the only one).
        prepare: per-base work: True (for the run's typed args) asks the orchestrator for the
            stage's pooled features of every split, computed once per distinct base and handed
            to ``build`` as ``ctx.features``.
        standard: a single network with one classifier head (:class:`StandardMethod`).
        title: the method as a reader names it in a table ("LDAM-DRW"), or a function of the
            resolved config and typed args ("RIDE (3 experts)"); "" = ``name``.
        family: its group in a comparison table, one of :data:`FAMILIES`.
    """

    name: str
    build: Build
    doc: str
    args: type = NoArgs
    recipe: Recipe | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    stage: Stage | None = None
    resolve: Callable[[ExperimentConfig], ExperimentConfig] | None = None
    validate: Callable[[ExperimentConfig], None] | None = None
    phase_end: Callable[[ExperimentConfig], int] | None = None
    outputs: tuple[Output, ...] = ()
    primary_output: Callable[[Any], str] | None = None
    prepare: Callable[[Any], bool] | None = None
    standard: bool = False
    title: str | Callable[[ExperimentConfig, Any], str] = ""
    family: str = FAMILIES[0]

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.args) or not isinstance(self.args, type):
            raise ValueError(f"method {self.name!r}: args must be a dataclass type")
        if self.recipe is not None:
            for registry, value in ((LOSSES, self.recipe.loss), (RULES, self.recipe.rule),
                                    (HEADS, self.recipe.head)):
                if value not in registry:
                    raise ValueError(f"method {self.name!r}: {registry.unknown_message(value)}")
        if self.outputs and self.primary_output is None:
            raise ValueError(f"method {self.name!r}: named outputs need a primary_output")
        for section in ("method", "model"):
            if self.recipe is not None and any(
                    k in (self.defaults.get(section) or {}) for k in ("loss", "rule", "head")):
                raise ValueError(f"method {self.name!r}: the recipe's loss/rule/head belong in "
                                 "recipe=, not in defaults")
        from_dict(ExperimentConfig, dict(self.defaults), "defaults")  # known keys and types
        families = (*FAMILIES, BASE_FAMILY, "")
        if self.family not in FAMILIES or any(o.family not in families for o in self.outputs):
            raise ValueError(f"method {self.name!r}: a family is one of {list(FAMILIES)}")

    @property
    def own_loss(self) -> bool:
        return self.recipe is None

    @property
    def needs_base(self) -> bool:
        return self.stage is not None

    def output_meanings(self) -> dict[str, str]:
        return {o.name: o.meaning for o in self.outputs}

    def title_for(self, cfg: ExperimentConfig, args: Any) -> str:
        """The method's title for this resolved config and its typed args."""
        if callable(self.title):
            return self.title(cfg, args)
        return self.title or self.name


#: Every method by name; filled by the method modules on import (``lt_ray.methods``).
METHODS: Registry[MethodSpec] = Registry("method")


def outputs_declaration(methods: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    """The declared outputs of ``methods`` (those with named outputs), as stored with a study
    (``study.json``) for the analysis: ``{method: [{name, label, meaning}, ...]}``."""
    return {name: [dataclasses.asdict(o) for o in METHODS.get(name).outputs]
            for name in sorted(set(methods)) if METHODS.get(name).outputs}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (a name registered twice is an error)."""
    METHODS.add(spec.name, spec)
    return spec
