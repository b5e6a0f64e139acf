"""Study YAML validation (no Ray started)."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lt_ray.cli import main
from lt_ray.errors import ConfigError
from lt_ray.tune.parse import load_spec, parse_spec
from lt_ray.tune.space import DefineByRun

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
        ({"resources": {"cpu": -1}}, "resources.cpu must be a finite number >= 0"),
        # a YAML int beyond float's range (what the fuzz drew): one line, not an OverflowError
        ({"resources": {"cpu": 10**400}}, "resources.cpu must be a finite number >= 0, got "
                                          "10000000000000000000... (401 characters)"),
        ({"space/optim.lr": {"uniform": [0.01, 10**400]}}, "bounds must be finite numbers"),
        ({"serach": {}}, "unknown key 'serach'; did you mean 'search'"),
        ({"grid/method.name": ["ce", "ldamm"]}, "unknown method 'ldamm'"),
        ({"base/train/epochs": 0}, "train.epochs must be > 0"),
        ({"space/method.loss_args.gamma": {"uniform": [1, 2], "when": {"method.los": "x"}}},
         "unknown config key 'method.los'"),
        # every value / both bounds / every point is validated, not only the first
        ({"grid": None, "space/method.loss": {"choice": ["ce", "focl"]},
          "space/method.loss_args.gamma": None},
         "space.method.loss='focl': method.loss: unknown loss 'focl'; did you mean focal"),
        ({"grid/method.name": ["ce", "focal", "ldamm"]}, "unknown method 'ldamm'"),
        ({"space/method.loss_args.gamma": {"uniform": [-1, 2], "when": {"method.name": "focal"}}},
         "method.loss_args.gamma must be >= 0, got -1.0"),
        ({"space/optim.lr": {"uniform": [0.01, -1]}}, "lower bound 0.01 must be below"),
        ({"space/optim.momentum": {"uniform": [0.5, 1.5]}},
         "space.optim.momentum=1.5: optim.momentum must be in [0, 1), got 1.5"),
        ({"space/train.epochs": {"randint": [2, 0]}}, "lower bound 2 must be below"),
        ({"space/data.imb_factor": {"choice": [10, 0.01]}},
         "space.data.imb_factor=0.01: data.imb_factor=0.01 is below 1"),
        ({"space/train.epochs": {"uniform": [2, 5]}},
         "space.train.epochs ~ uniform[2, 5] samples values such as 3.5"),
        ({"space/train.batch_size": {"choice": [[16, 32]]}}, "values must be numbers, strings"),
        ({"space/optim.lr": {"uniform": [0.01, float("inf")]}}, "bounds must be finite numbers"),
        ({"search/points_to_evaluate": [{"optim.lr": 5.0}]},
         "search.points_to_evaluate[0]: optim.lr=5.0 is outside space.optim.lr"),
        ({"search/points_to_evaluate": [{"optim.lrr": 0.05}]}, "'optim.lrr' is not a key of"),
        ({"search/points_to_evaluate": {"optim.lr": 0.05}}, "give a list of {dotted.key"),
        ({"search/points_to_evaluate": [{"method.loss_args.gamma": -1.0}],
          "space/method.loss_args.gamma": {"uniform": [-2, 2], "when": {"method.name": "focal"}}},
         "method.loss_args.gamma must be >= 0"),
        ({"grid": None, "space/method.loss": {"choice": ["ce", "ldam"]},
          "space/method.loss_args.gamma": None},
         "space.method.loss='ldam': loss 'ldam' needs model.head=normed"),
        ({"grid/method.name": ["lade"], "space/method.rule": {"choice": ["none", "drw"]},
          "space/method.loss_args.gamma": None},
         "space.method.rule='drw': loss 'lade' ignores class weights"),
        # conditions must be reachable
        ({"space/method.loss_args.gamma": {"uniform": [1, 2], "when": {"method.name": "focl"}}},
         "method.name='focl' is not a value of grid.method.name"),
        ({"grid": None, "space/method.loss": {"choice": ["ce", "focal"]},
          "space/method.loss_args.gamma": {"uniform": [1, 2], "when": {"method.loss": "fcl"}}},
         "is never sampled by space.method.loss"),
        # objectives that are always empty
        ({"base/data": {"dataset": "cifar10", "imb_factor": 100}, "search/metric": "val_few"},
         "search.metric=val_few is always empty: cifar10 at imb_factor 100 (exp) has no 'few' "
         "class (< 20 training images; the classes have 5000 down to 50)"),
        ({"base/data": {"dataset": "cifar100", "imb_factor": 10}, "search/metric": "val_few"},
         "no 'few' class"),
        ({"base/data": {"dataset": "synthetic", "imb_factor": 10}, "search/metric": "val_many"},
         "search.metric=val_many is always empty"),
        ({"base/data": {"dataset": "cifar10", "imb_factor": 10}, "search/metric": "val_medium"},
         "search.metric=val_medium is always empty"),
        ({"grid/data.imb_factor": [10, 100], "grid/method.name": None,
          "space/method.loss_args.gamma": None, "base/data": {"dataset": "cifar10"},
          "search/metric": ["val_acc", "val_medium"], "search/mode": ["max", "max"]},
         "grid cell data.imb_factor=10: search.metric=val_medium is always empty"),
        ({"max_failures": -1}, "max_failures must be >= 0"),
        ({"max_failures": 1.5}, "max_failures must be an integer"),
        ({"search/metric": [None]}, "not a metric the runs report"),
        ({"search/metric": 3}, "not a metric the runs report"),
        ({"search/metric": []}, "search.metric: give a metric name"),
        ({"space": ["optim.lr"]}, "space: must map dotted keys to distributions"),
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


@pytest.mark.parametrize("metric", ["val_gm_eps", "val_hm_eps", "val_many", "val_medium"])
def test_eps_and_nonempty_group_objectives_are_accepted(metric):
    spec = parse_spec(spec_with(**{"search/metric": metric,
                                   "base/data": {"dataset": "cifar10", "imb_factor": 100}}))
    assert spec.metrics == (metric,)


def test_val_few_is_accepted_where_the_group_exists():
    spec = parse_spec(spec_with(**{"search/metric": "val_few",
                                   "base/data": {"dataset": "cifar100", "imb_factor": 100}}))
    assert spec.metrics == ("val_few",)


def test_scientific_notation_in_study_files(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("base: {data: {dataset: synthetic}, optim: {weight_decay: 5e-4}}\n"
                    "space: {optim.lr: {loguniform: [1e-3, 1E-1]}}\n"
                    "search: {num_samples: 1e1}\n")
    spec = load_spec(str(path))
    assert spec.base["optim"]["weight_decay"] == 5e-4
    assert spec.params[0].args == (1e-3, 0.1) and spec.num_samples == 10


def test_conditional_head_for_a_searched_loss_is_accepted():
    spec = parse_spec(spec_with(**{
        "grid": None,
        "space/method.loss": {"choice": ["ce", "ldam"]},
        "space/model.head": {"choice": ["normed"], "when": {"method.loss": "ldam"}},
        "space/method.loss_args.gamma": None,
        "search/points_to_evaluate": [{"method.loss": "ldam", "optim.lr": 0.05}],
    }))
    assert [p.key for p in spec.params] == ["optim.lr", "method.loss", "model.head"]


def test_cuda_base_validates_on_a_cpu_only_driver(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = parse_spec(spec_with(**{"base/train/device": "cuda"}))
    assert spec.base["train"]["device"] == "cuda"


def test_set_overrides_apply_before_validation():
    spec = parse_spec(GOOD, overrides={"train.epochs": 7, "data.imb_factor": 10})
    assert spec.base["train"]["epochs"] == 7 and spec.base["data"]["imb_factor"] == 10
    assert GOOD["base"]["train"]["epochs"] == 2  # the raw study is not modified
    with pytest.raises(ConfigError, match="train.epochs must be > 0"):
        parse_spec(GOOD, overrides={"train.epochs": 0})
    with pytest.raises(ConfigError, match="method.loss_args.gamma is searched"):
        parse_spec(GOOD, overrides={"method.loss_args": {}})


def test_asha_rungs_must_come_after_the_last_schedule_phase():
    raw = spec_with(**{"scheduler": {"name": "asha", "grace_period": 2}})
    raw["base"]["train"]["epochs"] = 10  # step lr: last decay at epoch 9 (0.9 of 10)
    with pytest.raises(ConfigError, match=r"grace_period=2: asha would rank.*>= 10"):
        parse_spec(raw)
    raw["scheduler"]["grace_period"] = 10
    assert parse_spec(raw).grace_period == 10
    raw["base"]["method"] = {"name": "ldam_drw"}  # DRW from epoch 8: still 10 rules
    raw["grid"] = {}
    raw["space"] = {"optim.lr": {"loguniform": [0.01, 0.1]}}
    assert parse_spec(raw).scheduler == "asha"
    raw["base"]["optim"] = {"schedule": "cosine"}  # the lr decays until the last epoch
    with pytest.raises(ConfigError, match="cannot rank these trials fairly"):
        parse_spec(raw)
    raw["base"]["optim"] = {"schedule": "step"}
    raw["space"]["train.epochs"] = {"choice": [10, 20]}
    with pytest.raises(ConfigError, match="train.epochs in space"):
        parse_spec(raw)


def test_shipped_studies_request_a_quarter_gpu_and_one_cpu_per_trial():
    for path in SPACES:
        spec = load_spec(str(path))
        if spec.gpu:
            assert (spec.cpu, spec.gpu) == (1.0, 0.25), path.name


def test_resume_fingerprint_lists_what_changed():
    from lt_ray.tune.study_folder import spec_changes, study_fingerprint

    a, b = parse_spec(GOOD), parse_spec(spec_with(**{"search/num_samples": 5}))
    assert spec_changes(study_fingerprint(a), study_fingerprint(b)) == [
        "search.num_samples: 3 -> 5"]
    assert spec_changes(study_fingerprint(a), study_fingerprint(a)) == []


def test_trials_train_on_the_gpu_ray_assigned_and_on_the_cpu_without_one():
    from lt_ray.tune.trainable import trial_device

    assert trial_device("auto", 0) == "cpu"
    assert trial_device("cuda", 0) == "cpu"  # asked for gpu: 0
    assert trial_device("cpu", 0.25) == "cpu"
    expected = "cuda:0" if __import__("torch").cuda.is_available() else "cpu"
    assert trial_device("auto", 0.25) == expected


def test_driver_makes_a_relative_data_root_absolute(tmp_path, monkeypatch):
    from lt_ray.tune.study_folder import with_absolute_data_root

    monkeypatch.chdir(tmp_path)
    raw = spec_with(**{"base/data/root": "data"})
    spec = with_absolute_data_root(parse_spec(raw))
    assert spec.base["data"]["root"] == str(tmp_path / "data")
    raw = spec_with(**{"grid/data.root": ["a", "/abs/b"]})
    assert with_absolute_data_root(parse_spec(raw)).grid["data.root"] == [
        str(tmp_path / "a"), "/abs/b"]


def test_a_node_without_the_data_fails_its_trial_naming_node_and_folder(tmp_path):
    import socket

    from lt_ray.config import ExperimentConfig
    from lt_ray.errors import DataError
    from lt_ray.tune.trainable import load_trial_data

    cfg = ExperimentConfig.from_dict({"data": {"dataset": "cifar10", "download": True,
                                               "root": str(tmp_path / "nowhere")}})
    with pytest.raises(DataError) as info:
        load_trial_data(cfg, None)
    message = str(info.value)
    assert socket.gethostname() in message and str(tmp_path / "nowhere") in message
    assert "never download" in message


def test_repeat_section_is_validated():
    spec = parse_spec(spec_with(**{"repeat": {"top_k": 2, "seeds": [1, 2, 3]}}))
    assert (spec.repeat_top_k, spec.repeat_seeds) == (2, (1, 2, 3))
    assert spec.shrink_for_smoke().repeat_top_k == 0
    for bad, message in (({"seeds": []}, "repeat.seeds"), ({"seeds": [1, 1]}, "repeats a seed"),
                         ({"top_k": 9, "seeds": [1]}, "exceeds search.num_samples"),
                         ({"seeds": [1], "k": 1}, "unknown key 'repeat.k'")):
        with pytest.raises(ConfigError, match=message):
            parse_spec(spec_with(**{"repeat": bad}))
    with pytest.raises(ConfigError, match="seed is a grid axis"):
        parse_spec(spec_with(**{"repeat": {"seeds": [1]}, "grid/seed": [0, 1]}))
