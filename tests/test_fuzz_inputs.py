"""Property-based fuzzing of the user's inputs: study YAMLs, experiment YAMLs and ``--set``.

Valid inputs (the studies in ``search_spaces/`` and small synthetic ones) are mutated: wrong
types, out-of-range numbers, unknown keys and names, broken nesting, YAML 1.1 strings such as
``5e-4``, null, lists. Every mutation must either pass or end in exactly one ``error: ...`` line
with exit code 2 (a ConfigError from the library); never a traceback. No data is read and no
Ray is started (``--dry-run``; ``lt-ray train`` only with inputs that fail validation).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import TINY
from lt_ray.cli import load_config, main
from lt_ray.config import ExperimentConfig, yaml_load
from lt_ray.errors import LTRayError
from lt_ray.resolution import resolve

pytestmark = pytest.mark.timeout(300)  # a hang (e.g. a huge config value) must fail, not stall

SPACES = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))
SYNTHETIC_STUDY = {
    "name": "fuzz",
    "base": {"data": {"dataset": "synthetic", "imb_factor": 10}, "train": {"epochs": 2}},
    "grid": {"method.name": ["ce", "focal", "ldam_drw"]},
    "space": {
        "optim.lr": {"loguniform": [0.01, 0.1]},
        "method.loss_args.gamma": {"uniform": [0.5, 2.0], "when": {"method.name": "focal"}},
        "method.rule_args.beta": {"choice": [0.99, 0.999], "when": {"method.name": "ldam_drw"}},
    },
    "search": {"metric": "val_hm", "mode": "max", "num_samples": 3, "seed": 0,
               "points_to_evaluate": [{"optim.lr": 0.05}]},
    "scheduler": {"name": "asha", "grace_period": 1},
    "resources": {"cpu": 1, "gpu": 0},
    "max_failures": 1,
}
STUDIES = [yaml.safe_load(p.read_text()) for p in SPACES] + [SYNTHETIC_STUDY]
EXPERIMENTS = [TINY, {"method": {"name": "ldam_drw", "loss_args": {"s": 30}}},
               resolve(ExperimentConfig.from_dict({"method": {"name": "feabal"}})).config.to_dict()]


def _leaf_keys(cls: Any, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        out += _leaf_keys(tp, f"{key}.") if dataclasses.is_dataclass(tp) else [key]
    return out


CONFIG_KEYS = _leaf_keys(ExperimentConfig)
HPARAM_KEYS = [f"method.loss_args.{k}" for k in ("gamma", "max_m", "s", "alpha", "lambda",
                                                 "lambda_", "remine_lambda", "p", "curriculum")]
HPARAM_KEYS += [f"method.rule_args.{k}" for k in ("beta", "start_fraction", "gamma")]
ODD_KEYS = ["", ".", "optim..lr", "optim", "method", "method.loss_args", "optim.lr.x", "x",
            "optim.lrr", "data.synthetic", "search.metric", "name", "base.train.epochs"]
WORDS = ["5e-4", "2e0", "1E5", "-1e-3", "1e400", "-1", "0", "1.5", ".nan", ".inf", "abc", "",
         "ce", "focal", "focl", "ldam", "ldam_drw", "lade", "gml", "bsce", "feabal", "drw",
         "reweight", "resample", "none", "linear", "normed", "cuda", "cuda:1", "cpu", "mps",
         "val_few", "val_hm_eps", "test_hm", "max", "min", "tpe", "asha", "synthetic",
         "cifar10", "cifar100", "resnet20", "exp", "step", "true", "null", "[1, 2]", "{a: 1}",
         "optim.lr", "method.name", "2020-01-01", "0x10", "1:30", "~"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([0, 1, -1, 2, 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([5e-4, 0.5, 0.9999, 1.0, 1.5, 100.0, -0.5, 1e-300, 1e300]),
    st.sampled_from(WORDS),
    st.text(max_size=6),
)
numbers = st.one_of(
    st.booleans(),
    st.integers(min_value=-3, max_value=300),
    st.sampled_from([0.0, 5e-4, 0.01, 0.5, 0.9999, 1.0, 1.5, 10.0, 100.0, -0.5, 1e300, 2**32]),
    st.floats(allow_nan=True, allow_infinity=True),
)
keys = st.one_of(st.sampled_from(CONFIG_KEYS + HPARAM_KEYS + ODD_KEYS), st.text(max_size=6))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=5,
)


def _containers(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every mapping and list inside ``node`` (the root included)."""
    out = [path] if isinstance(node, (dict, list)) else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else []
    for k, v in items:
        out += _containers(v, (*path, k))
    return out


def _get(node: Any, path: tuple) -> Any:
    for k in path:
        node = node[k]
    return node


def mutate(data: st.DataObject, doc: Any, rounds: int) -> Any:
    """Apply ``rounds`` random mutations to a deep copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for _ in range(rounds):
        path = data.draw(st.sampled_from(_containers(doc)))
        node = _get(doc, path)
        slots = list(node) if isinstance(node, dict) else list(range(len(node)))
        op = data.draw(st.sampled_from(["replace", "delete", "add", "wrap", "unwrap", "rename",
                                        "number", "sci", "similar", "similar"]))
        if op == "add" or not slots:
            if isinstance(node, dict):
                node[data.draw(keys)] = data.draw(values)
            else:
                node.append(data.draw(values))
            continue
        slot = data.draw(st.sampled_from(slots))
        old = node[slot]
        if op == "delete":
            del node[slot]
        elif op == "rename" and isinstance(node, dict):
            node[data.draw(keys)] = node.pop(slot)
        elif op == "wrap":  # a list or mapping where a value is expected
            node[slot] = data.draw(st.sampled_from([[old], {"value": old}, {str(old): old}]))
        elif op == "unwrap" and isinstance(old, (dict, list)) and old:
            # a value where a list or mapping is expected
            inner = list(old.values()) if isinstance(old, dict) else old
            node[slot] = data.draw(st.sampled_from(inner))
        elif op in ("number", "sci") and isinstance(old, int) and abs(old) > 10**300:
            node[slot] = old  # an int beyond float's range (drawn earlier) stays as it is
        elif op == "number" and isinstance(old, (int, float)) and not isinstance(old, bool):
            factor = data.draw(st.sampled_from([-1, 0, 0.5, 2, 1e6, 1e-6]))
            node[slot] = old * factor
        elif op == "sci" and isinstance(old, (int, float)) and not isinstance(old, bool):
            node[slot] = f"{float(old):.0e}"  # e.g. "5e-04": a string to YAML 1.1, a float here
        elif op == "similar" and isinstance(old, str):  # another name, or a near miss
            node[slot] = data.draw(st.sampled_from([*WORDS, old[:-1], f"{old}x"]))
        elif op == "similar" and isinstance(old, (int, float)):
            node[slot] = data.draw(numbers)
        else:
            node[slot] = data.draw(values)
    return doc


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def as_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def set_args(data: st.DataObject) -> list[str]:
    """Up to three ``--set KEY=VALUE``: mostly real keys with plausible or hostile values."""
    out = []
    for _ in range(data.draw(st.integers(0, 3))):
        key = data.draw(st.one_of(st.sampled_from(CONFIG_KEYS + HPARAM_KEYS), keys))
        value = data.draw(st.one_of(st.sampled_from(WORDS), numbers.map(as_yaml),
                                    values.map(as_yaml)))
        out += ["--set", f"{key}={value}"]
    return out


def assert_one_error_or_success(res: Any) -> None:
    """Exit 0, or exit 2 with exactly one ``error:`` line; never a traceback."""
    assert "Traceback" not in res.output, res.output
    event(f"exit code {res.exit_code}")
    if res.exit_code == 0:
        assert res.exception is None
        return
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="lt-ray-fuzz-") as folder:
        yield Path(folder)


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(data=st.data())
def test_mutated_study_files_fail_cleanly(workdir, data):
    study = data.draw(st.sampled_from(STUDIES))
    doc = mutate(data, study, data.draw(st.integers(1, 3)))
    path = workdir / "study.yaml"
    path.write_text(dump(doc))
    res = CliRunner().invoke(main, ["sweep", str(path), "--dry-run", "--storage",
                                    str(workdir / "results"), *set_args(data)])
    assert_one_error_or_success(res)
    assert not (workdir / "results").exists()  # a dry run writes nothing


@FUZZ
@given(data=st.data())
def test_sweep_set_overrides_fail_cleanly(workdir, data):
    path = workdir / "synthetic.yaml"
    path.write_text(dump(SYNTHETIC_STUDY))
    args = set_args(data) or ["--set", "train.epochs=3"]
    res = CliRunner().invoke(main, ["sweep", str(path), "--dry-run", "--storage",
                                    str(workdir / "results"), *args])
    assert_one_error_or_success(res)


@FUZZ
@given(data=st.data())
def test_experiment_configs_fail_cleanly(workdir, data):
    """--config FILE and --set through load_config + resolve: ConfigError or a valid config that
    resolves idempotently and round-trips through YAML (what config.yaml records)."""
    doc = mutate(data, data.draw(st.sampled_from(EXPERIMENTS)), data.draw(st.integers(0, 3)))
    path = workdir / "exp.yaml"
    path.write_text(dump(doc))
    method = data.draw(st.one_of(st.none(), st.sampled_from(["ce", "focal", "ldam_drw", "lade",
                                                             "feabal", "ldamm", ""])))
    overrides = tuple(a for a in set_args(data) if a != "--set")
    try:
        cfg = load_config(str(path), method, overrides)
        resolved = resolve(cfg).config
    except LTRayError:
        event("refused")
        out = workdir / "run"
        args = ["train", "--config", str(path), "--out", str(out)]
        args += ["--method", method] if method is not None else []
        for text in overrides:
            args += ["--set", text]
        res = CliRunner().invoke(main, args)
        assert_one_error_or_success(res)
        assert res.exit_code == 2 and not out.exists()
        return
    event("valid")
    assert resolve(resolved).config == resolved
    reloaded = ExperimentConfig.from_dict(yaml_load(dump(resolved.to_dict())))
    assert reloaded == resolved
    assert resolve(reloaded).config == resolved


HOSTILE_LOCATIONS = ["s3:/x", "s3:x", "ftp://x/y", "foo://bucket/p", "file:///", "", " ",
                     "..", "../../etc", "a\nb", "a\x00b", "x" * 300, "ü" * 200, "~",
                     "results/" + "y" * 256, "-", "--"]
HOSTILE_NAMES = ["../../etc", "my study", "x" * 400, "ü" * 3, "", "-a", "a/b", ".", "..",
                 "a" * 64, "a" * 65, "CON", "study\n", "gml_cifar-10"]


@FUZZ
@given(data=st.data())
def test_storage_locations_and_study_names_fail_cleanly(workdir, data):
    """--storage and --name, hostile or random: a valid plan, or one error line; a dry run
    writes nothing anywhere (the storage is never created)."""
    path = workdir / "names.yaml"
    path.write_text(dump(SYNTHETIC_STUDY))
    text = st.text(st.characters(codec="utf-8"), max_size=40)
    storage = data.draw(st.one_of(st.sampled_from(HOSTILE_LOCATIONS), text))
    name = data.draw(st.one_of(st.none(), st.sampled_from(HOSTILE_NAMES), text))
    args = ["sweep", str(path), "--dry-run", "--storage", storage]
    if name is not None:
        args += ["--name", name]
    before = sorted(p.name for p in Path.cwd().iterdir())
    res = CliRunner().invoke(main, args)
    assert_one_error_or_success(res)
    assert sorted(p.name for p in Path.cwd().iterdir()) == before  # nothing created here
