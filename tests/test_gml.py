"""The GML plug-in: ensemble formula, stage artifacts, feature cache, old-head fidelity, and
every bad input (one `error:` line, exit code 2, nothing written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import TINY, assert_refused, tiny_overrides
from lt_ray.cli import main
from lt_ray.config import ExperimentConfig
from lt_ray.errors import ConfigError
from lt_ray.experiment import run
from lt_ray.methods.gml import GMLArgs, ensemble
from lt_ray.resolution import resolve


def test_ensemble_formulas_on_hand_made_logits():
    new = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    old = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    prob = ensemble(new, old, "prob", t1=1.0, t2=2.0)
    expected = torch.log(F.softmax(new, 1) + F.softmax(old / 2.0, 1))
    assert torch.allclose(prob, expected)
    # by hand, row 0: softmax([2,0,0]) = [0.787, 0.107, 0.107]; softmax([0,1.5,0]) = [0.154,
    # 0.691, 0.154]: summed [0.941, 0.798, 0.261] -> class 0
    assert prob.argmax(1).tolist() == [0, 2]
    e2 = math.exp(2)
    assert prob[0, 0].item() == pytest.approx(math.log(e2 / (e2 + 2) + 1 / (2 + math.exp(1.5))))
    logit = ensemble(new, old, "logit", t1=0.5, t2=4.0)
    assert torch.allclose(logit, new / 0.5 + old / 4.0)
    assert logit.argmax(1).tolist() == [0, 1]  # row 1: [0, 2, 1]


def test_gml_args_are_typed_and_checked():
    assert GMLArgs().freeze == "features" and GMLArgs().ensemble == "none"
    with pytest.raises(ConfigError, match="method.args.t1 must be a temperature > 0"):
        GMLArgs(t1=0.0)
    with pytest.raises(ConfigError, match="method.args.t2 must be a temperature > 0"):
        GMLArgs(t2=-1.0)
    with pytest.raises(ConfigError, match="freeze=all re-trains nothing"):
        GMLArgs(freeze="all", ensemble="none")
    with pytest.raises(ConfigError, match="method.args.ensemble='avg' is not one of"):
        GMLArgs(ensemble="avg")


def gml_cfg(**overrides) -> ExperimentConfig:
    cfg = ExperimentConfig.from_dict(TINY).replace({
        "method.name": "gml", "train.epochs": 3,
        "pretrained.method.name": "ce", "pretrained.train.epochs": 2,
    })
    return cfg.replace(overrides) if overrides else cfg


def test_recipe_defaults_layer_under_yaml_and_set():
    cfg = resolve(ExperimentConfig.from_dict({"method": {"name": "gml"},
                                              "pretrained": {"method": {"name": "ce"}}})).config
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.schedule) == (0.05, 5e-4, "cosine")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.method.loss) == (30, 128, "gml")
    mine = ExperimentConfig.from_dict({"method": {"name": "gml"}, "optim": {"lr": 0.2}})
    assert mine.optim.schedule == "step"  # unresolved: the user's values over the defaults
    resolved = resolve(mine.replace({"pretrained.method.name": "ce"})).config
    assert resolved.optim.lr == 0.2 and resolved.optim.schedule == "cosine"  # YAML over recipe
    back = resolve(mine.replace({"method.name": "ce"})).config  # its recipe, the user's lr
    assert (back.optim.lr, back.optim.schedule, back.train.epochs) == (0.2, "step", 200)


def test_artifact_hash_follows_the_resolved_config_not_run_only_fields():
    stage = resolve(gml_cfg()).stage
    assert stage.config.method.name == "ce"
    assert stage.config.data.dataset == "synthetic"  # inherits data
    same = resolve(gml_cfg(**{"pretrained.train.eval_every": 7, "train.device": "cpu"})).stage
    assert same.hash == stage.hash
    for change in ({"pretrained.train.epochs": 3}, {"pretrained.optim.lr": 0.2},
                   {"seed": 1}, {"data.imb_factor": 20}):
        other = resolve(gml_cfg(**change)).stage
        assert other.hash != stage.hash, change
    explicit = resolve(gml_cfg(**{"pretrained.seed": 0})).stage
    assert explicit.hash == stage.hash  # 0 = inherited


def test_base_trained_once_cached_features_and_old_head_equals_the_base(tmp_path):
    root = str(tmp_path / "art")
    result = run(resolve(gml_cfg()), tmp_path / "gml", artifacts=root)
    folders = [p for p in Path(root).iterdir() if p.is_dir()]
    assert len(folders) == 1
    base_dir = folders[0]
    base_metrics = json.loads((base_dir / "metrics.json").read_text())
    for split in ("val", "test", "fulltest"):  # the old head IS the base, evaluated again
        for metric in ("acc", "hm_eps", "lr"):
            assert result.metrics[f"{split}_{metric}_old"] == base_metrics[f"{split}_{metric}"]
        assert result.per_class[f"{split}/old"] == base_metrics["per_class_recall"][split]
    cache = next(base_dir.glob("features-*.pt"))
    stamp = cache.stat().st_mtime_ns
    again = run(resolve(gml_cfg(**{"method.args.ensemble": "prob", "method.args.t1": 2.0})),
                tmp_path / "ens", artifacts=root)
    assert [p for p in Path(root).iterdir() if p.is_dir()] == folders  # no second base
    assert cache.stat().st_mtime_ns == stamp  # features reused, not recomputed
    assert again.metrics["test_acc"] == again.metrics["test_acc_ens"]
    assert result.metrics["test_acc"] == result.metrics["test_acc_new"]
    features = torch.load(cache, weights_only=True)
    assert {k: len(v) for k, v in features.items()} == {"train": 84, "val": 32, "test": 32,
                                                         "fulltest": 64}


def test_freeze_all_ensembles_the_two_heads_of_a_gml_base_without_training(tmp_path):
    root = str(tmp_path / "art")
    cfg = gml_cfg(**{"method.args.freeze": "all", "method.args.ensemble": "prob",
                     "method.args.t1": 0.5, "pretrained.method.name": "gml",
                     "pretrained.train.epochs": 2, "pretrained.pretrained.method.name": "ce",
                     "pretrained.pretrained.train.epochs": 2})
    result = run(resolve(cfg), tmp_path / "all", artifacts=root)
    assert [h["epoch"] for h in result.history] == [0]  # evaluate-only
    gml_base = json.loads(next(p for p in Path(root).glob("*/metrics.json")
                               if "test_acc_new" in p.read_text()).read_text())
    assert result.metrics["test_acc_new"] == gml_base["test_acc_new"]
    assert result.metrics["test_acc_old"] == gml_base["test_acc_old"]
    caches = sorted(p.parent.name for p in Path(root).glob("*/features-*.pt"))
    ce_dir = next(p.parent.name for p in Path(root).glob("*/metrics.json")
                  if "test_acc_new" not in p.read_text())
    assert caches == [ce_dir]  # the GML chain shares the CE backbone's feature cache


def _train(args: list[str], tmp_path: Path):
    return CliRunner().invoke(main, ["train", *tiny_overrides(), *args,
                                     "--out", str(tmp_path / "out")])


def _refused(res, tmp_path: Path, *needles: str) -> None:
    assert_refused(res, tmp_path / "out", *needles)


def test_bad_base_checkpoints_are_refused(tmp_path):
    base = ["--method", "gml", "--artifacts", str(tmp_path / "art")]
    _refused(_train([*base, "--set", f"pretrained.checkpoint={tmp_path / 'none.pt'}"],
                    tmp_path), tmp_path, "checkpoint not found")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    _refused(_train([*base, "--set", f"pretrained.checkpoint={corrupt}"], tmp_path),
             tmp_path, "cannot read checkpoint")
    other = ExperimentConfig.from_dict({**TINY, "data": {**TINY["data"], "synthetic": {
        **TINY["data"]["synthetic"], "num_classes": 6}}}).replace({"train.epochs": 1})
    run(resolve(other), tmp_path / "six")
    _refused(_train([*base, "--set", f"pretrained.checkpoint={tmp_path / 'six/checkpoint.pt'}"],
                    tmp_path), tmp_path, "was trained on synthetic (6 classes of 8px), but this "
             "run's data is synthetic (4 classes of 8px)")
    _refused(_train([*base, "--set", f"pretrained.checkpoint={tmp_path / 'six/checkpoint.pt'}",
                     "--set", "data.dataset=cifar100"], tmp_path), tmp_path,
             "run's data is cifar100: a base is re-trained on its own dataset; set "
             "data.dataset=synthetic")
    deeper = ExperimentConfig.from_dict(TINY).replace({"train.epochs": 1})
    run(resolve(deeper), tmp_path / "r20")
    state = torch.load(tmp_path / "r20" / "checkpoint.pt", weights_only=True)["state_dict"]
    torch.save({k.removeprefix("model."): v for k, v in state.items()}, tmp_path / "bare.pt")
    _refused(_train([*base, "--set", f"pretrained.checkpoint={tmp_path / 'bare.pt'}",
                     "--set", "model.arch=resnet32"], tmp_path),
             tmp_path, "does not match the model")


@pytest.mark.parametrize("key, value, needle", [
    ("checkpoint", "base.pt", "give pretrained.checkpoint=PATH"),
    ("base_head", "normed", "pretrained.method.name=ldam_drw"),
    ("base_scale", "16", "pretrained.method.loss_args.s=SCALE"),
])
def test_moved_base_arguments_name_their_new_key(tmp_path, key, value, needle):
    args = ["--method", "gml", "--artifacts", str(tmp_path / "art")]
    _refused(_train([*args, "--set", f"method.args.{key}={value}"], tmp_path), tmp_path,
             f"method.args.{key} is no longer a method argument", "pretrained.checkpoint",
             needle)


def test_a_foreign_cosine_base_is_described_by_its_stage_method(tmp_path):
    root = str(tmp_path / "art")
    base = ExperimentConfig.from_dict(TINY).replace({"method.name": "ldam_drw",
                                                     "train.epochs": 1})
    run(resolve(base), tmp_path / "ldam")
    state = torch.load(tmp_path / "ldam" / "checkpoint.pt", weights_only=True)["state_dict"]
    torch.save({k.removeprefix("model."): v for k, v in state.items()}, tmp_path / "bare.pt")
    foreign = ["--method", "gml", "--artifacts", root,
               "--set", f"pretrained.checkpoint={tmp_path / 'bare.pt'}"]
    # the default stage method (ce) has a linear head: the cosine head's weights do not fit
    _refused(_train(foreign, tmp_path), tmp_path, "does not match the model")
    res = _train([*foreign, "--set", "pretrained.method.name=ldam_drw",
                  "--set", "train.epochs=1"], tmp_path)
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    base_metrics = json.loads((tmp_path / "ldam" / "metrics.json").read_text())
    for split in ("val", "test", "fulltest"):  # the old head is the foreign base, s=30 included
        assert metrics[f"{split}_acc_old"] == base_metrics[f"{split}_acc"]
        assert metrics["per_class_recall"][f"{split}/old"] == (
            base_metrics["per_class_recall"][split])
    assert metrics["config"]["pretrained"]["checkpoint"] == str(tmp_path / "bare.pt")
    assert metrics["config"]["pretrained"]["method"]["name"] == "ldam_drw"
    assert not list(Path(root).glob("*/artifact.json"))  # nothing trained as an artifact


def test_bad_gml_arguments_and_sections_are_refused(tmp_path):
    art = ["--artifacts", str(tmp_path / "art")]
    stage = ["--set", "pretrained.method.name=ce", "--set", "pretrained.train.epochs=1"]
    _refused(_train(["--method", "gml", *art, *stage, "--set", "method.args.t1=0"], tmp_path),
             tmp_path, "method.args.t1 must be a temperature > 0")
    _refused(_train(["--method", "gml", *art, *stage, "--set", "method.args.t2=-2"], tmp_path),
             tmp_path, "method.args.t2")
    _refused(_train(["--method", "gml", *art, *stage, "--set", "method.args.freeze=all"],
                    tmp_path), tmp_path, "freeze=all re-trains nothing")
    _refused(_train(["--method", "gml", *art], tmp_path), tmp_path,
             "builds on a stage-1 model")
    _refused(_train(["--method", "ce", *art, *stage], tmp_path), tmp_path,
             "uses no pretrained model")
    _refused(_train(["--method", "gml", *art, *stage, "--set", "method.args.colour=red"],
                    tmp_path), tmp_path, "method.args.colour")
    blocked = tmp_path / "a_file"
    blocked.write_text("x")
    _refused(_train(["--method", "gml", "--artifacts", str(blocked / "art"), *stage],
                    tmp_path), tmp_path, "which is a file; give a folder")


def test_a_pretrained_key_may_be_a_grid_axis_but_never_searched(tmp_path):
    import yaml

    study = {"name": "s", "base": {**TINY, "method": {"name": "gml"},
                                   "pretrained": {"method": {"name": "ce"}}},
             "grid": {"pretrained.method.name": ["ce", "bsce"]},
             "search": {"metric": "val_hm", "num_samples": 1}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    assert CliRunner().invoke(main, ["sweep", str(path), "--dry-run"]).exit_code == 0
    study["grid"] = {}
    study["space"] = {"pretrained.optim.lr": {"loguniform": [0.01, 0.1]}}
    path.write_text(yaml.safe_dump(study))
    res = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 2 and "never searched" in res.output, res.output


def test_seed_repeats_of_a_staged_study_need_one_base_per_seed():
    from lt_ray.tune.parse import parse_spec
    from lt_ray.tune.stages import stage_levels

    study = {"name": "s", "base": {**TINY, "method": {"name": "gml"},
                                   "pretrained": {"method": {"name": "ce"}}},
             "grid": {"method.args.ensemble": ["none", "prob"]},  # two cells, one base
             "search": {"metric": "val_hm", "num_samples": 2}}
    (level,) = stage_levels(parse_spec(study))
    assert [s.config.seed for s in level] == [0]
    study["repeat"] = {"top_k": 1, "seeds": [1, 2]}
    (level,) = stage_levels(parse_spec(study))
    assert sorted(s.config.seed for s in level) == [0, 1, 2]  # a repeat re-runs the whole pipeline
