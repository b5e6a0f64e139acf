"""Typed, frozen experiment configuration with strict parsing and dotted overrides.

Owns the config dataclasses and their parsing: ``from_dict`` rejects any unknown key and any
value of the wrong type with a :class:`ConfigError` naming the dotted path. An
:class:`ExperimentConfig` as parsed holds the user's values over the dataclass defaults; the
method's recipe, its hooks, the ``pretrained:`` stage and every check that needs the
registries belong to :mod:`lt_ray.resolution`, the one step that turns it into a run.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import inspect
import keyword
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from lt_ray.errors import ConfigError

C = TypeVar("C")
FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)
BOOL_TAG = "tag:yaml.org,2002:bool"
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class YamlLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with YAML 1.2 floats (``5e-4``, ``1E5`` and ``2e0`` are numbers),
    YAML 1.2 booleans (``true``/``false`` only: ``on``, ``off``, ``yes``, ``no`` are strings) and
    no duplicate keys.

    YAML 1.1 (PyYAML) needs a dot and a signed exponent (``5.0e-4``) and reads ``5e-4`` as the
    string ``"5e-4"``; and it lets a second ``space:`` silently replace the first. Every YAML
    the user writes (experiment and study files, ``--set`` values) is read with this loader
    (:func:`yaml_load`).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose keys are all different, at every level (a duplicate names both
        lines)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the SafeLoader explains it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first}, again at line "
                    f"{line}); give each key once", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (FLOAT_TAG, BOOL_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "-+0123456789.":
    YamlLoader.yaml_implicit_resolvers.setdefault(_first, []).insert(0, (FLOAT_TAG, _FLOAT_RE))
for _first in "tTfF":  # YAML 1.2 booleans: true and false only (`compile: off` is a string)
    YamlLoader.yaml_implicit_resolvers.setdefault(_first, []).insert(0, (BOOL_TAG, _BOOL_RE))


def yaml_load(text: str) -> Any:
    """Parse YAML text safely, with YAML 1.2 floats (:class:`YamlLoader`)."""
    return yaml.load(text, Loader=YamlLoader)  # safe: YamlLoader is a SafeLoader


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Shape of the ``synthetic`` dataset (ignored by the CIFAR datasets)."""

    num_classes: int = 10
    n_max: int = 100  # training images of the head class before the long-tail subset
    image_size: int = 16  # pixels per side
    test_per_class: int = 20  # balanced official-test images per class
    noise: float = 0.35  # pixel noise std on a [0, 1] scale; larger = harder


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | cifar100 | synthetic
    root: str | None = None  # None: --data-root, then $LT_RAY_DATA, then the user cache
    imb_type: str = "exp"  # exp | step | none
    imb_factor: float = 100.0  # n_max / n_min, >= 1 (100 means 5000 -> 50 on CIFAR-10)
    split_seed: int = 0  # seeds the kept subset and the val/test split (private RNG)
    val_fraction: float = 0.5  # share of each class of the official test set used as val
    download: bool = True  # torchvision download when the files are missing
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    arch: str = "resnet32"  # resnet20 | resnet32 | resnet44 | resnet56
    head: str | None = None  # linear | normed; None: the method's recipe decides


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    name: str = "ce"  # a registered method (`lt-ray list`)
    loss: str | None = None  # None: the recipe's loss
    rule: str | None = None  # None: the recipe's train rule
    loss_args: dict[str, Any] = field(default_factory=dict)  # loss hyper-parameters
    rule_args: dict[str, Any] = field(default_factory=dict)  # train-rule hyper-parameters
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixup on every batch; 0 disables
    args: dict[str, Any] = field(default_factory=dict)  # the method's own arguments (typed)


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: float = 0.1  # peak learning rate (batch 128)
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    schedule: str = "step"  # step | cosine | constant
    warmup_epochs: int = 5  # linear warmup; capped at epochs // 10 for short runs
    milestones: tuple[float, ...] = (0.8, 0.9)  # step schedule: fractions of the epochs
    # epochs each step waits after its milestone epoch: 0 = from the milestone on (LDAM-DRW's
    # `epoch + 1 > 160`, 0-indexed 160 of 200), 1 = from the next one (PaCo's `epoch > 320`)
    milestone_lag_epochs: int = 0
    decay: tuple[float, ...] = (0.01, 0.0001)  # lr multiplier from each milestone on


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 1000
    eval_every: int = 1  # evaluate val and test every N epochs (and always at the last)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16; auto = bf16 where supported
    fp32_head: bool = True  # classifier head, loss and logits in fp32 under autocast
    eval_precision: str = "fp32"  # fp32 | train (evaluate with the training precision)
    channels_last: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    sampler: str = "instance"  # instance | class_balanced | sqrt | class_aware | effective
    crop_padding: int = 4  # random crop with this zero padding; 0 disables
    flip: bool = True  # random horizontal flip
    cutout: int = 0  # side of one cutout square in pixels; 0 disables
    checkpoint_every: int = 1  # write the resumable checkpoint every N epochs
    compile: str = "auto"  # off | on | auto: torch.compile the training step (auto: where it pays)


#: Precisions of ``train.precision`` (besides ``auto``) and ``train.eval_precision``.
PRECISIONS = ("fp32", "bf16", "fp16")
EVAL_PRECISIONS = ("fp32", "train")  # evaluate in fp32, or with the training autocast
COMPILE_MODES = ("auto", "off", "on")  # train.compile
#: The key of the ``pretrained:`` section that names a checkpoint trained elsewhere.
CHECKPOINT_KEY = "checkpoint"

INTERNAL = {"internal": True}  # dataclass field metadata: not a config key


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """One run as the user gave it: their values (``explicit``) over the dataclass defaults.

    :func:`lt_ray.resolution.resolve` layers them on the method's recipe (defaults < recipe <
    YAML < ``--set``); ``replace`` applies dotted overrides to the user's values, so changing
    ``method.name`` brings the new method's recipe at resolution.
    """

    seed: int = 0  # model init, sampling and augmentation
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # stage 1 of a multi-stage method: a partial experiment config, trained once per distinct
    # resolved config and cached as an artifact (lt_ray.artifacts); inherits data, seed, model.arch.
    # With `checkpoint: PATH` the stage is read from a file trained elsewhere instead.
    pretrained: dict[str, Any] | None = None
    # the values the user set (what resolution layers on the recipe, and `replace` changes)
    explicit: dict[str, Any] = field(default_factory=dict, compare=False, repr=False,
                                     metadata=INTERNAL)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> ExperimentConfig:
        raw = copy.deepcopy(raw or {})
        return dataclasses.replace(from_dict(cls, raw), explicit=raw)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def replace(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """A copy with dotted-key overrides applied (``{"optim.lr": 0.05}``) to the user's
        values."""
        raw = copy.deepcopy(self.explicit)
        for key, value in overrides.items():
            set_dotted(raw, key, value)
        return ExperimentConfig.from_dict(raw)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, recursively for mappings present in both."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.cache
def _hints(obj: Any) -> dict[str, Any]:
    """``typing.get_type_hints`` of a config class or factory, evaluated once."""
    return typing.get_type_hints(obj)


def to_dict(obj: Any) -> Any:
    """Plain dict/list/scalars (YAML- and JSON-safe) of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in _fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type[C], raw: Any, path: str = "") -> C:
    """Build dataclass ``cls`` from ``raw``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(raw, dict):
        where = path or "the config"
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}: {raw!r}")
    hints = _hints(cls)
    names = [f.name for f in _fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise _unknown_key(path, key, names)
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def _fields(cls: Any) -> list[dataclasses.Field]:
    """The config keys of a config class (its fields, internal ones left out)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _unknown_key(path: str, key: Any, names: list[str]) -> ConfigError:
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"; did you mean '{_join(path, close[0])}'?" if close else ""
    return ConfigError(
        f"unknown config key {_join(path, str(key))!r}{hint} (valid keys here: {', '.join(names)})"
    )


def check_key(dotted: str) -> None:
    """Raise ConfigError unless ``dotted`` names a value of the experiment config (any key inside
    a free-form mapping such as ``method.loss_args`` is accepted here)."""
    tp: Any = ExperimentConfig
    path = ""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if typing.get_origin(tp) is dict:
            return
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"'{path}' is a value, not a section: {dotted}")
        if path and tp is ExperimentConfig and part == CHECKPOINT_KEY and i == len(parts) - 1:
            return  # pretrained.checkpoint: a stage read from a file
        names = [f.name for f in _fields(tp)]
        if part not in names:
            raise _unknown_key(path, part, names)
        tp = ExperimentConfig if (tp, part) == (ExperimentConfig, "pretrained") else (
            _hints(tp)[part])
        path = _join(path, part)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(path, "a list", value)
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(path, "a mapping", value)
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(path, "true or false", value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _type_error(path, "an integer", value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise _type_error(path, "a number within the float range", value) from None
        raise _type_error(path, "a number", value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(path, "a string", value)
    raise ConfigError(f"{path}: unsupported config type {tp}")  # pragma: no cover


def _type_error(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"config key '{path}' must be {expected}, got {value!r}")


def python_name(key: str) -> str:
    """A hyper-parameter's Python spelling: ``lambda`` is a keyword, so it is ``lambda_``."""
    return f"{key}_" if keyword.iskeyword(key) else key


def hparam_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only parameters of a loss/rule factory with their defaults: its hyper-parameters."""
    params = inspect.signature(factory).parameters
    return {p.name: p.default for p in params.values() if p.kind is p.KEYWORD_ONLY}


def resolve_hparams(
    factory: Callable[..., Any], given: Mapping[Any, Any], *, section: str, owner: str
) -> dict[str, Any]:
    """Every hyper-parameter of ``factory``: the ``given`` ones coerced to their declared types
    (``gamma: float = 1.0`` turns 2 into 2.0 and refuses ``true``, ``"x"``, null or a list), the
    others at their defaults. Keys are the Python names (``lambda_``; ``lambda`` is accepted).

    Args:
        factory: the registered loss or rule factory (its keyword-only arguments).
        given: the user's values, e.g. ``cfg.method.loss_args``.
        section: the dotted config section for messages, e.g. ``method.loss_args``.
        owner: what the factory builds, for messages, e.g. ``loss 'focal'``.
    """
    defaults = hparam_defaults(factory)
    hints = _hints(factory)
    valid = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
    out = dict(defaults)
    seen: dict[str, str] = {}
    for key, value in given.items():
        name = python_name(key) if isinstance(key, str) else key
        if name not in defaults:
            raise ConfigError(
                f"{owner} has no hyper-parameter {key!r} (valid: {valid}); "
                f"set them as {section}.NAME"
            )
        if name in seen:
            raise ConfigError(f"{section}: {seen[name]!r} and {key!r} are the same key; give one")
        seen[name] = key
        dotted = f"{section}.{key}"
        coerced = _coerce(hints.get(name, Any), value, dotted)
        if isinstance(coerced, float) and not math.isfinite(coerced):
            raise ConfigError(f"config key '{dotted}' must be a finite number, got {value!r}")
        out[name] = coerced
    return out


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted = "a.b"``, creating mappings on the way."""
    parts = dotted.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"'{'.'.join(parts[: i + 1])}' is a value, not a section: {dotted}")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.05"`` -> ``("optim.lr", 0.05)``; the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=0.05), got {text!r}")
    try:
        parsed = yaml_load(value) if value.strip() else ""
    except (yaml.YAMLError, RecursionError):
        parsed = value
    return key.strip(), parsed


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping; syntax errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {p} as a UTF-8 YAML file: {exc}") from None
    try:
        data = yaml_load(text)
    except RecursionError:
        raise ConfigError(f"{p} is nested too deeply to be a config file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"YAML syntax error at {where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a YAML mapping at the top level")
    return data
