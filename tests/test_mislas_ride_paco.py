"""MiSLAS, RIDE and PaCo as methods: recipes, stage 2 on stage-1 artifacts, what each trains
and freezes, the router's dynamic expert count, PaCo's queue, GML on their checkpoints, and
every bad input (one `error:` line, exit code 2, nothing written). The losses are checked
against independent implementations in tests/losses/test_method_losses.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import HAS_CIFAR10, SHARED_DATA, TINY, assert_refused, tiny_overrides
from lt_ray.cli import main
from lt_ray.config import ExperimentConfig
from lt_ray.data import build_dataset
from lt_ray.engine import fit
from lt_ray.errors import ConfigError
from lt_ray.experiment import build_method, ensure_stages, run, seed_everything
from lt_ray.methods.mislas import MiSLASStage2, per_if_defaults
from lt_ray.methods.paco import PaCoMethod
from lt_ray.methods.ride import RIDEMethod, RIDERouter
from lt_ray.models.ride import RideResNet, route
from lt_ray.resolution import resolve


def tiny(**overrides) -> ExperimentConfig:
    cfg = ExperimentConfig.from_dict(TINY)
    return cfg.replace(overrides) if overrides else cfg


def built(cfg: ExperimentConfig, tmp_path: Path):
    """The resolved config, its data and its method, with stage 1 trained into tmp_path."""
    resolved = resolve(cfg)
    cfg = resolved.config
    data = build_dataset(cfg.data)
    root = ensure_stages(resolved, str(tmp_path / "art"), data_root=None, data=data, build=True)
    seed_everything(cfg.seed)
    return cfg, data, build_method(resolved, data, torch.device("cpu"), root=root)


# --- MiSLAS ----------------------------------------------------------------------------------


def test_mislas_stage2_defaults_follow_the_dataset_and_imbalance_factor():
    # the official config/cifar100 and config/cifar10 stage-2 files
    assert per_if_defaults("cifar100", 100) == (0.4, 0.1, 0.2, True)
    assert per_if_defaults("cifar100", 50) == (0.3, 0.0, 0.1, True)
    assert per_if_defaults("cifar100", 10) == (0.2, 0.0, 0.1, True)
    assert per_if_defaults("cifar100", 200) == (0.4, 0.1, 0.2, True)  # nearest on a log scale
    assert per_if_defaults("cifar10", 100) == (0.3, 0.0, 0.5, False)
    assert per_if_defaults("cifar10", 50) == (0.2, 0.0, 0.2, False)
    assert per_if_defaults("cifar10", 10) == (0.1, 0.0, 0.2, False)
    assert per_if_defaults("synthetic", 10) == per_if_defaults("cifar100", 10)
    cifar10 = resolve(ExperimentConfig.from_dict(
        {"method": {"name": "mislas"}, "data": {"dataset": "cifar10"}})).config
    assert cifar10.method.loss_args["smooth_head"] == 0.3
    assert cifar10.method.loss_args["smooth_tail"] == 0.0
    assert cifar10.method.args["lr_factor"] == 0.5 and cifar10.method.args["shift_bn"] is False
    kept = resolve(ExperimentConfig.from_dict(
        {"method": {"name": "mislas", "args": {"shift_bn": True}},
         "data": {"dataset": "cifar10"}})).config
    assert kept.method.args["shift_bn"] is True  # a value the user set is kept
    # IF 50 leaves the tiny data's tail class empty at n_max 48: resolution refuses that
    cfg = resolve(tiny(**{"method.name": "mislas", "data.imb_factor": 50,
                          "data.synthetic.n_max": 100})).config
    assert cfg.method.loss == "las" and cfg.method.loss_args["smooth_head"] == 0.3
    assert cfg.method.loss_args["smooth_tail"] == 0.0 and cfg.method.args["lr_factor"] == 0.1
    assert cfg.optim.schedule == "cosine" and cfg.optim.warmup_epochs == 0
    recipe = resolve(ExperimentConfig.from_dict({"method": {"name": "mislas"}})).config
    assert recipe.train.epochs == 10
    assert cfg.pretrained["method"]["name"] == "mislas_stage1"
    assert cfg.pretrained["method"]["mixup_alpha"] == 1.0
    assert cfg.pretrained["optim"]["decay"] == [0.1, 0.01]
    assert cfg.pretrained["model"]["arch"] == "resnet20"  # inherited
    given = resolve(tiny(**{"method.name": "mislas", "method.loss_args.smooth_head": 0.25,
                            "method.args.lr_factor": 0.5})).config
    assert given.method.loss_args["smooth_head"] == 0.25
    assert given.method.loss_args["smooth_tail"] == 0.0  # IF 10 (TINY)
    assert given.method.args["lr_factor"] == 0.5


@pytest.mark.parametrize("shift_bn", [True, False])
def test_mislas_stage2_trains_classifier_and_lws_on_a_frozen_backbone(tmp_path, shift_bn):
    cfg = tiny(**{"method.name": "mislas", "train.epochs": 2, "pretrained.train.epochs": 1,
                  "method.args.shift_bn": shift_bn})
    cfg, data, method = built(cfg, tmp_path)
    assert isinstance(method, MiSLASStage2)
    weights = {k: v.clone() for k, v in method.base.model.named_parameters()}
    stats = method.base.model.bn1.running_mean.clone()
    head, lws = method.head.weight.clone(), method.lws.detach().clone()
    groups = method.param_groups()
    assert [g["lr_scale"] for g in groups] == [0.1, 1.0]  # lr_factor of IF 10 (TINY)
    fit(method, data, cfg)
    for name, value in method.base.model.named_parameters():  # BN affine included
        assert torch.equal(value, weights[name]), name
    assert torch.equal(method.base.model.bn1.running_mean, stats) != shift_bn
    assert not torch.equal(method.head.weight, head)
    assert not torch.equal(method.lws.detach(), lws)
    name, kwargs = method.sampler()
    n = int(data.class_counts.sum())
    assert name == "class_aware" and kwargs["num_samples"] == math.ceil(n / 32) * 32


# --- RIDE ------------------------------------------------------------------------------------


def test_ride_model_shares_the_stem_and_gives_each_expert_its_own_stages():
    model = RideResNet(5, 10, num_experts=3, reduce_dimension=True)
    assert len(model.layer2s) == len(model.layer3s) == len(model.head.linears) == 3
    assert model.layer2s[0][0].conv1.out_channels == 24
    assert model.layer3s[0][0].conv1.out_channels == 48
    wide = RideResNet(5, 10, num_experts=3, reduce_dimension=False)
    assert wide.layer3s[0][0].conv1.out_channels == 64
    x = torch.randn(4, 3, 32, 32)
    features = model.features(x)
    experts = model.expert_logits(features)
    assert features.shape == (4, 144) and experts.shape == (3, 4, 10)
    assert torch.allclose(model(x), experts.mean(0), atol=1e-6)
    assert float(experts.detach().abs().max()) <= 30.0 + 1e-4  # s * cos


def test_route_calls_the_next_expert_while_the_router_says_so():
    experts = torch.stack([torch.full((3, 2), 1.0), torch.full((3, 2), 3.0),
                           torch.full((3, 2), 8.0)])
    routers = torch.tensor([[-1.0, 5.0],  # stops after expert 0 (a later yes is ignored)
                            [2.0, -3.0],  # experts 0, 1
                            [4.0, 4.0]])  # all three
    logits, count = route(experts, routers)
    assert count.tolist() == [1, 2, 3]
    assert logits[:, 0].tolist() == pytest.approx([1.0, 2.0, 4.0])


def test_ride_router_stage_reports_the_mean_number_of_experts(tmp_path):
    cfg = tiny(**{"method.name": "ride_ea", "train.epochs": 1, "train.batch_size": 32,
                  "pretrained.train.epochs": 1})
    cfg, data, method = built(cfg, tmp_path)
    assert isinstance(method, RIDERouter) and isinstance(method.base, RIDEMethod)
    assert method.router.top_k == 4  # min(30, classes)
    frozen = {k: v.clone() for k, v in method.base.named_parameters()}
    result = fit(method, data, cfg)
    for name, value in method.base.named_parameters():
        assert torch.equal(value, frozen[name]), name
    for split in ("val", "test", "fulltest"):
        assert 1.0 <= result.metrics[f"{split}_experts"] <= 3.0
        assert result.metrics[f"{split}_acc"] == result.metrics[f"{split}_acc_routed"]
        assert f"{split}_acc_all" in result.metrics


def test_ride_distill_freezes_its_teacher_and_adds_the_kl(tmp_path):
    cfg = tiny(**{"method.name": "ride_distill", "train.epochs": 1,
                  "pretrained.train.epochs": 1, "pretrained.method.args.num_experts": 4})
    cfg, data, method = built(cfg, tmp_path)
    assert method.teacher.model.num_experts == 4 and method.model.num_experts == 3
    assert cfg.optim.warmup_epochs == 20
    teacher = {k: v.clone() for k, v in method.teacher.named_parameters()}
    method.set_mode(0)
    method.on_epoch_start(0, 1)
    batch = next(iter(_loader(data)))
    out = method.training_step(batch)
    assert "distill" in out.extras and float(out.extras["distill"]) >= 0
    with torch.no_grad():
        experts = method.model.expert_logits(method.model.features(batch.x))
    assert float(out.loss.detach()) == pytest.approx(
        3 * (float(method.loss(experts, batch.y)) + float(out.extras["distill"])), rel=1e-4)
    fit(method, data, cfg)
    for name, value in method.teacher.named_parameters():
        assert torch.equal(value, teacher[name]), name


def _loader(data):
    from lt_ray.data import DeviceLoader

    return DeviceLoader(data.train, batch_size=16, mean=data.mean, std=data.std, train=True)


# --- PaCo ------------------------------------------------------------------------------------


def test_paco_queue_momentum_encoder_and_whole_batches(tmp_path):
    cfg = tiny(**{"method.name": "paco", "train.epochs": 1, "train.batch_size": 16,
                  "method.args.queue_size": 32})
    cfg, data, method = built(cfg, tmp_path)
    assert isinstance(method, PaCoMethod) and method.raw_images and method.drop_last
    net = method.net
    key_before = next(net.encoder_k.parameters()).clone()
    queue_before = net.queue.clone()
    result = fit(method, data, cfg)
    steps = int(data.class_counts.sum()) // 16
    assert int(net.queue_ptr) == (steps * 16) % 32
    assert not torch.equal(net.queue, queue_before)
    assert not torch.equal(next(net.encoder_k.parameters()), key_before)
    assert not any(p.requires_grad for p in net.encoder_k.parameters())
    x = torch.randn(3, 3, 8, 8)
    method.eval()
    assert torch.allclose(method.predict(x), net.classifier(net.features(x)), atol=1e-6)
    assert 0 <= result.metrics["test_acc"] <= 1


# --- GML on their checkpoints ----------------------------------------------------------------


@pytest.mark.parametrize("base", ["ride", "paco", "mislas"])
def test_gml_retrains_the_classifier_of_ride_paco_and_mislas(tmp_path, base):
    overrides = {"method.name": "gml", "train.epochs": 2, "pretrained.method.name": base,
                 "pretrained.train.epochs": 1, "pretrained.train.batch_size": 16}
    if base == "paco":
        overrides["pretrained.method.args.queue_size"] = 32
    if base == "mislas":
        overrides["pretrained.pretrained.train.epochs"] = 1
    cfg = tiny(**overrides)
    result = run(resolve(cfg), tmp_path / "out", artifacts=str(tmp_path / "art"))
    stage_metrics = _artifact_metrics(tmp_path / "art", base)
    # the old head is the base itself: the same predictions, the same metrics
    assert result.metrics["test_acc_old"] == pytest.approx(stage_metrics["test_acc"], abs=1e-9)
    for key in ("test_hm_new", "test_hm_ens", "val_acc_new"):
        assert 0.0 <= result.metrics[key] <= 1.0


def _artifact_metrics(root: Path, method: str) -> dict:
    for marker in root.glob("*/artifact.json"):
        if json.loads(marker.read_text())["method"] == method:
            return json.loads((marker.parent / "metrics.json").read_text())
    raise AssertionError(f"no {method} artifact in {root}")


# --- a stage 1 trained elsewhere (pretrained.checkpoint) -------------------------------------


def test_an_lt_ray_checkpoint_describes_the_stage_over_the_method_default(tmp_path):
    """ride_distill's default teacher has 6 experts; a 4-expert lt-ray teacher checkpoint
    records what it is, and only the user's pretrained: keys change that."""
    teacher = tiny(**{"method.name": "ride", "method.args.num_experts": 4, "train.epochs": 1})
    run(resolve(teacher), tmp_path / "teacher")
    path = str(tmp_path / "teacher" / "checkpoint.pt")
    resolved = resolve(tiny(**{"method.name": "ride_distill", "train.epochs": 1,
                               "pretrained.checkpoint": path}))
    assert resolved.stage.checkpoint == path
    assert resolved.stage.config.method.args["num_experts"] == 4
    assert resolved.stage.hash == resolve(teacher).hash  # the run that wrote it
    result = run(resolved, tmp_path / "out", artifacts=str(tmp_path / "art"))
    assert 0.0 <= result.metrics["test_acc"] <= 1.0
    assert not list((tmp_path / "art").glob("*/artifact.json"))  # nothing trained as stage 1
    with pytest.raises(ConfigError, match="'ride' run \\(another architecture\\)"):
        resolve(tiny(**{"method.name": "mislas", "pretrained.checkpoint": path}))


# --- the CLI ---------------------------------------------------------------------------------


def test_list_shows_the_three_methods_with_their_hyper_parameters():
    out = CliRunner().invoke(main, ["list"]).output
    for needle in ("mislas", "mislas_stage1", "ride", "ride_ea", "ride_distill", "paco",
                   "num_experts", "diversity_factor", "queue_size", "temperature", "lr_factor",
                   "las"):
        assert needle in out, needle


def _train(args: list[str], tmp_path: Path):
    return CliRunner().invoke(main, ["train", *tiny_overrides(), *args,
                                     "--artifacts", str(tmp_path / "art"),
                                     "--out", str(tmp_path / "out")])


def _refused(res, tmp_path: Path, *needles: str) -> None:
    assert_refused(res, tmp_path / "out", *needles)
    assert not any((tmp_path / "art").glob("*/artifact.json"))  # no stage 1 built either


def test_bad_inputs_are_refused_before_any_work(tmp_path):
    _refused(_train(["--method", "ride", "--set", "method.args.num_experts=0"], tmp_path),
             tmp_path, "method.args.num_experts must be >= 1")
    _refused(_train(["--method", "paco", "--set", "method.args.queue_size=100"], tmp_path),
             tmp_path, "queue_size=100 is not a multiple of train.batch_size=32")
    _refused(_train(["--method", "mislas", "--set", "pretrained=null"], tmp_path),
             tmp_path, "builds on a stage-1 model", "pretrained.method.name=mislas_stage1")
    _refused(_train(["--method", "ride_ea", "--set", "pretrained=null"], tmp_path),
             tmp_path, "builds on a stage-1 model")
    _refused(_train(["--method", "mislas", "--set", "pretrained.method.name=ride"], tmp_path),
             tmp_path, "another architecture")
    _refused(_train(["--method", "ride_ea", "--set", "pretrained.method.name=ce"], tmp_path),
             tmp_path, "another architecture")
    _refused(_train(["--method", "ride_ea", "--set", "pretrained.method.args.num_experts=1"],
                    tmp_path), tmp_path, "2 or more experts")
    _refused(_train(["--method", "mislas", "--set", "pretrained.model.arch=resnet32"],
                    tmp_path), tmp_path, "model.arch=resnet20", "resnet32")
    _refused(_train(["--method", "ride", "--set", "method.loss=ce"], tmp_path),
             tmp_path, "has its own loss", "method.loss")
    _refused(_train(["--method", "ride", "--set", "pretrained.method.name=ce"], tmp_path),
             tmp_path, "uses no pretrained model")
    _refused(_train(["--method", "paco", "--set", "method.args.momentum=1.5"], tmp_path),
             tmp_path, "method.args.momentum")


# --- real CIFAR-10-LT: one epoch of each, through `lt-ray train` ------------------------------

REAL = ["--data-root", str(SHARED_DATA), "--set", "data.dataset=cifar10",
        "--set", "data.imb_factor=100", "--set", "data.download=false",
        "--set", "train.epochs=1", "--set", "train.eval_batch_size=2000"]


def _complete(metrics_file: Path, method: str, *extra: str) -> dict:
    from lt_ray.metrics import ALL_NAMES

    metrics = json.loads(metrics_file.read_text())
    assert metrics["config"]["method"]["name"] == method
    assert metrics["num_train_images"] == 12406
    for key in (*ALL_NAMES, "train_loss", "wall_time_s", *extra):
        if key.endswith("_few"):  # CIFAR-10-LT IF 100 has no class under 20 images: null
            assert key in metrics and metrics[key] is None, (method, key)
            continue
        assert metrics[key] is not None and math.isfinite(metrics[key]), (method, key)
    assert set(metrics["per_class_recall"]) >= {"val", "test", "fulltest"}
    assert len(metrics["per_class_recall"]["test"]) == 10 and len(metrics["history"]) == 1
    return metrics


@pytest.mark.realdata
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAS_CIFAR10, reason=f"no CIFAR-10 at {SHARED_DATA}")
@pytest.mark.parametrize("method", ["mislas", "ride_ea", "paco"])
def test_one_epoch_on_real_cifar10_lt(tmp_path, method):
    """mislas trains its stage 1 (mixup) then stage 2; ride_ea trains a 3-expert ride (its
    stage 1, a complete run of its own) then the router; paco one epoch of two views."""
    art = tmp_path / "art"
    args = ["train", "--method", method, *REAL, "--artifacts", str(art),
            "--out", str(tmp_path / "out")]
    if method != "paco":
        args += ["--set", "pretrained.train.epochs=1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    extra = ("test_experts", "test_acc_all") if method == "ride_ea" else ()
    metrics = _complete(tmp_path / "out" / "metrics.json", method, *extra)
    stages = {json.loads(m.read_text())["method"]: m.parent for m in art.glob("*/artifact.json")}
    if method == "mislas":
        assert set(stages) == {"mislas_stage1"}
        _complete(stages["mislas_stage1"] / "metrics.json", "mislas_stage1")
        # CIFAR-10 IF 100: the official config/cifar10 stage-2 values
        assert metrics["config"]["method"]["loss_args"]["smooth_head"] == 0.3
        assert metrics["config"]["method"]["args"]["lr_factor"] == 0.5
        assert metrics["config"]["method"]["args"]["shift_bn"] is False
    if method == "ride_ea":
        assert set(stages) == {"ride"}
        ride = _complete(stages["ride"] / "metrics.json", "ride")
        assert ride["config"]["method"]["args"]["num_experts"] == 3
        assert 1.0 <= metrics["test_experts"] <= 3.0
        assert metrics["test_acc_all"] == pytest.approx(ride["test_acc"], abs=1e-9)


@pytest.mark.parametrize("method", ["ride_ea", "paco", "mislas"])
def test_predict_re_evaluates_their_checkpoints_without_the_stage_1(tmp_path, method):
    args = ["--method", method, "--set", "train.epochs=1", "--set", "train.batch_size=16"]
    if method == "paco":
        args += ["--set", "method.args.queue_size=32"]
    else:
        args += ["--set", "pretrained.train.epochs=1"]
    res = _train(args, tmp_path)
    assert res.exit_code == 0, res.output
    recorded = json.loads((tmp_path / "out" / "metrics.json").read_text())
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(tmp_path / "out"),
                                    "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    for key in ("test_acc", "test_hm", "test_lr"):
        assert doc["metrics"][key] == recorded[key], key
    assert doc["per_class_recall"]["test"] == recorded["per_class_recall"]["test"]


@pytest.mark.parametrize(("method", "key", "value", "needle"), [
    ("ride", "s", -1, "method.args.s must be > 0"),
    ("ride", "s", float("nan"), "method.args.s must be a finite number"),
    ("ride", "beta", 1.5, "method.args.beta must be in [0, 1)"),
    ("ride", "diversity_temperature", 0, "method.args.diversity_temperature must be > 0"),
    ("ride", "diversity_factor", float("-inf"), "method.args.diversity_factor must be a finite"),
    ("ride_distill", "max_m", -0.1, "method.args.max_m must be >= 0"),
    ("paco", "temperature", float("inf"), "method.args.temperature must be a finite number"),
    ("mislas", "lr_factor", float("nan"), "method.args.lr_factor must be a finite number"),
])
def test_method_args_are_range_checked_at_resolution(method, key, value, needle):
    """Every method's args are checked with the rest of the config, before any data is read
    (a NaN scale used to train until it diverged)."""
    with pytest.raises(ConfigError) as caught:
        resolve(tiny(**{"method.name": method, f"method.args.{key}": value}))
    assert needle in str(caught.value)
