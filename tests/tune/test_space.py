"""Study YAML validation (no Ray started)."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lt_ray.cli import main
from lt_ray.errors import ConfigError
from lt_ray.tune.space import DefineByRun, load_spec, parse_spec

SPACES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))
GOOD = {
    "name": "t",
    "base": {"data": {"dataset": "synthetic"}, "train": {"epochs": 2}},
    "grid": {"method.name": ["ce", "focal"]},
    "space": {
        "optim.lr": {"loguniform": [0.01, 0.1]},
        "method.loss_args.gamma": {"uniform": [0.5, 2.0], "when": {"method.name": "focal"}},
    },
    "search": {"metric": "val_hm", "mode": "max", "num_samples": 3},
}


def spec_with(**changes):
    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_study_file_validates_and_dry_runs(path):
    spec = load_spec(str(path))
    assert spec.num_samples >= 1 and spec.cells()
    res = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert f"study {spec.name}" in res.output and "resources per trial" in res.output


def test_grid_cells_and_conditional_parameters():
    spec = parse_spec(GOOD)
    cells = spec.cells()
    assert [c.values for c in cells] == [{"method.name": "ce"}, {"method.name": "focal"}]
    assert [p.key for p in spec.cell_params(cells[0])] == ["optim.lr"]
    assert [p.key for p in spec.cell_params(cells[1])] == ["optim.lr", "method.loss_args.gamma"]


class FakeTrial:
    def __init__(self, loss):
        self.loss, self.calls = loss, []

    def suggest_categorical(self, key, values):
        self.calls.append(key)
        return self.loss

    def suggest_float(self, key, lo, hi, log=False, step=None):
        self.calls.append(key)
        return lo


def test_define_by_run_samples_gamma_only_for_focal():
    spec = parse_spec(spec_with(**{
        "grid": None,
        "space/method.loss": {"choice": ["ce", "focal"]},
        "space/method.loss_args.gamma": {"uniform": [0.5, 2.0], "when": {"method.loss": "focal"}},
    }))
    fn = DefineByRun(spec.cell_params(spec.cells()[0]))
    trial = FakeTrial("ce")
    fn(trial)
    assert "method.loss_args.gamma" not in trial.calls
    trial = FakeTrial("focal")
    fn(trial)
    assert "method.loss_args.gamma" in trial.calls


def test_multi_objective():
    spec = parse_spec(spec_with(**{"search/metric": ["val_acc", "val_lr"],
                                   "search/mode": ["max", "max"]}))
    assert spec.multi_objective and spec.metrics == ("val_acc", "val_lr")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"space/optim.lrr": {"uniform": [0.1, 0.2]}}, "unknown config key 'optim.lrr'"),
        ({"space/optim.lr": {"gaussian": [0, 1]}}, "unknown distribution"),
        ({"space/optim.lr": {"uniform": [0.2, 0.1]}}, "lower bound 0.2 must be below"),
        ({"space/optim.lr": {"loguniform": [0, 0.1]}}, "bounds must be > 0"),
        ({"space/optim.lr": {"uniform": [0.1]}}, "give a list of 2 numbers"),
        ({"space/train.batch_size": {"randint": [16.5, 64]}}, "must be integers"),
        ({"space/method.name": {"choice": []}}, "non-empty list"),
        ({"search/algorithm": "hyperopt"}, "search.algorithm='hyperopt' is unknown"),
        ({"search/sampler": "cmaes"}, "search.sampler='cmaes' is unknown"),
        ({"scheduler": {"name": "pbt"}}, "scheduler.name='pbt' is unknown"),
        ({"search/metric": "val_f1"}, "not a metric the runs report"),
        ({"search/metric": "test_hm"}, "test-set selection"),
        ({"search/mode": "maximize"}, "use max or min"),
        ({"search/num_samples": 0}, "search.num_samples must be > 0"),
        ({"grid/optim.lr": [0.1, 0.2]}, "either a grid axis or searched"),
        ({"resources": {"gpus": 1}}, "unknown key 'resources.gpus'"),
        ({"resources": {"cpu": -1}}, "resources.cpu must be a number >= 0"),
        ({"serach": {}}, "unknown key 'serach'; did you mean 'search'"),
        ({"grid/method.name": ["ce", "ldamm"]}, "unknown method 'ldamm'"),
        ({"base/train/epochs": 0}, "train.epochs must be > 0"),
        ({"space/method.loss_args.gamma": {"uniform": [1, 2], "when": {"method.los": "x"}}},
         "unknown config key 'method.los'"),
    ],
)
def test_bad_study_files_are_one_clear_error(tmp_path, changes, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec_with(**changes)))
    with pytest.raises(ConfigError, match=None) as info:
        load_spec(str(path))
    assert message in str(info.value)
    res = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 2 and message in res.output


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nspace:\n  optim.lr: {uniform: [0.1, 0.2}\n")
    res = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 2 and "bad.yaml:3" in res.output


def test_smoke_shrinks_to_two_one_epoch_trials():
    spec = parse_spec(GOOD).shrink_for_smoke()
    assert spec.num_samples == 2 and len(spec.cells()) == 1
    assert spec.base["train"]["epochs"] == 1


def test_pareto_front_keeps_only_non_dominated_trials():
    from lt_ray.results import TrialRecord
    from lt_ray.tune.export import pareto_front, summarize

    def rec(tid, acc, lr):
        return TrialRecord(study="s", cell="", trial_id=tid, status="completed",
                           final={"val_acc": acc, "val_lr": lr})

    rows = [rec("a", 0.9, 0.1), rec("b", 0.8, 0.3), rec("c", 0.7, 0.2), rec("d", 0.9, 0.1)]
    front = pareto_front(rows, ("val_acc", "val_lr"), ("max", "max"))
    assert sorted(r.trial_id for r in front) == ["a", "b", "d"]  # c is beaten by b
    assert [r.trial_id for r in pareto_front(rows, ("val_acc",), ("min",))] == ["c"]
    text = summarize(("val_acc", "val_lr"), ("max", "max"), rows)
    assert "Pareto front (val_acc, val_lr): a, b, d" in text
