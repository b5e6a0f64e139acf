import math

import pytest
import torch

from lt_ray.data import build_dataset
from lt_ray.engine import fit, resolve_precision
from lt_ray.errors import TrainingDiverged
from lt_ray.experiment import build_method, run, seed_everything
from lt_ray.methods import METHODS
from lt_ray.resolution import resolve


def test_synthetic_run_learns(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(
        {"train.epochs": 10, "optim.lr": 0.05, "data.synthetic.n_max": 100}
    )
    result = run(resolve(cfg), tmp_path / "out")
    assert len(result.history) == 10
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.metrics["test_acc"] > 0.6  # 4 classes: chance is 0.25
    assert result.metrics["fulltest_acc"] == pytest.approx(
        (result.metrics["val_acc"] + result.metrics["test_acc"]) / 2, abs=1e-9
    )


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_one_epoch(tiny_cfg, name, tmp_path):
    cfg = tiny_cfg.replace({"method.name": name, "train.epochs": 1})
    spec = METHODS.get(name)
    if spec.needs_base:  # a stage 2: on a one-epoch stage 1
        if "pretrained" not in spec.defaults:  # a plug-in: on a CE base
            cfg = cfg.replace({"pretrained.method.name": "ce"})
        cfg = cfg.replace({"pretrained.train.epochs": 1, "pretrained.train.batch_size": 16})
    # every method's defaults must fit the tiny config (e.g. a queue of whole tiny batches)
    result = run(resolve(cfg), None, artifacts=str(tmp_path / "artifacts"))
    for key in ("val_acc", "test_hm", "fulltest_lr"):
        assert 0.0 <= result.metrics[key] <= 1.0
    assert math.isfinite(result.metrics["train_loss"])


def test_nan_loss_stops_with_a_specific_error(tiny_cfg):
    cfg = tiny_cfg.replace({"optim.lr": 1e30, "train.epochs": 3})
    with pytest.raises(TrainingDiverged, match="NaN/inf at epoch"):
        run(resolve(cfg), None)


def test_eval_every_and_report_callback(tiny_cfg):
    cfg = tiny_cfg.replace({"train.epochs": 3, "train.eval_every": 2})
    seen = []
    result = run(resolve(cfg), None, report=lambda rec, ck, pc: seen.append(rec["epoch"]))
    assert seen == [2, 3]
    assert "val_acc" not in result.history[0] and "val_acc" in result.history[1]


def test_resume_after_interruption_gives_the_same_result(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace({"train.epochs": 3})
    straight = run(resolve(cfg), tmp_path / "a")

    class Stop(Exception):
        pass

    def stop_after_two(record, ckpt, per_class):
        if record["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        run(resolve(cfg), tmp_path / "b", report=stop_after_two)
    resumed = run(resolve(cfg), tmp_path / "b", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.metrics["test_acc"] == straight.metrics["test_acc"]
    assert resumed.history[-1]["train_loss"] == pytest.approx(straight.history[-1]["train_loss"])


def test_bf16_autocast_on_cpu_trains(tiny_cfg):
    if resolve_precision("auto", torch.device("cpu")) is None:
        pytest.skip("no native bf16 on this CPU")
    cfg = tiny_cfg.replace({"train.precision": "bf16", "train.epochs": 1})
    assert run(resolve(cfg), None).metrics["precision"] == "bfloat16"


def test_resample_rule_changes_the_sampler(tiny_cfg):
    cfg = tiny_cfg.replace({"method.name": "resample_ce"})
    data = build_dataset(cfg.data)
    seed_everything(0)
    method = build_method(resolve(cfg), data, torch.device("cpu"))
    method.on_epoch_start(0, 2)
    assert method.sampler() == ("effective", {"beta": 0.9999})


def test_fit_without_out_dir_writes_nothing(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = build_dataset(tiny_cfg.data)
    method = build_method(resolve(tiny_cfg), data, torch.device("cpu"))
    fit(method, data, resolve(tiny_cfg.replace({"train.epochs": 1})).config)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("head", ["linear", "normed"])
def test_head_runs_in_fp32_under_bf16_autocast(head):
    from lt_ray.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", 10, head=head).eval()
    x = torch.randn(64, 3, 16, 16)
    with torch.no_grad():
        features = model.features(x)
        exact = model.head(features.float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fp32 = model.classify(features)
            model.fp32_head = False
            rounded = model.classify(features)
    assert fp32.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    assert torch.equal(fp32, exact)
    assert not torch.equal(rounded.float(), exact)  # what bf16 heads used to return


def test_eval_precision_is_validated_and_recorded(tiny_cfg):
    from lt_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="train.eval_precision='bf16' is unknown"):
        resolve(tiny_cfg.replace({"train.eval_precision": "bf16"}))
    cfg = tiny_cfg.replace({"train.epochs": 1, "train.precision": "bf16"})
    fp32_eval = run(resolve(cfg), None).metrics
    train_eval = run(resolve(cfg.replace({"train.eval_precision": "train"})), None).metrics
    assert fp32_eval["train_loss"] == train_eval["train_loss"]  # same training either way
    assert fp32_eval["precision"] == "bfloat16"


def test_compile_modes_decide_per_run_length(tiny_cfg):
    from lt_ray.engine import COMPILE_AUTO_MIN_STEPS, compiles
    from lt_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="train.compile='yes' is unknown"):
        resolve(tiny_cfg.replace({"train.compile": "yes"}))
    data = build_dataset(tiny_cfg.data)
    cpu = torch.device("cpu")
    ce = build_method(resolve(tiny_cfg), data, cpu)
    paco = build_method(resolve(tiny_cfg.replace({"method.name": "paco"})), data, cpu)
    threshold = COMPILE_AUTO_MIN_STEPS["cpu"]
    for mode, steps, method, expected in (
        ("off", 10**9, ce, False), ("on", 1, ce, True), ("on", 1, paco, True),
        ("auto", threshold - 1, ce, False), ("auto", threshold, ce, True),
        ("auto", 10**9, paco, False),  # not compilable: its views use kornia's Python RNG
    ):
        train = tiny_cfg.replace({"train.compile": mode}).train
        assert compiles(method, train, cpu, steps) is expected, (mode, steps)
    # a device type without a measured threshold stays eager under auto
    assert not compiles(ce, tiny_cfg.train, torch.device("cuda"), 10**9)


def test_compiled_step_trains_as_the_eager_one(tiny_cfg, monkeypatch):
    """train.compile=on routes every step through torch.compile (here with dynamo's eager
    backend: the captured graph, run by eager kernels, so the numbers are exact)."""
    calls = []
    real = torch.compile

    def eager_compile(fn, **kwargs):
        calls.append((fn.__name__, kwargs))
        return real(fn, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    # one batch per epoch (one graph to capture); three epochs of steps to compare
    cfg = tiny_cfg.replace({"train.epochs": 3, "train.precision": "fp32",
                            "train.batch_size": 256})
    eager = run(resolve(cfg.replace({"train.compile": "off"})), None)
    compiled = run(resolve(cfg.replace({"train.compile": "on"})), None)
    assert calls == [("training_step", {"dynamic": False})]
    assert (eager.metrics["compiled"], compiled.metrics["compiled"]) == (False, True)
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert compiled.metrics["test_acc"] == pytest.approx(eager.metrics["test_acc"], abs=0.02)


def test_auto_compile_falls_back_to_eager_when_compilation_fails(tiny_cfg, monkeypatch,
                                                                  caplog):
    """A compiler failure under train.compile=auto costs one warning, not the run; under
    train.compile=on it is the run's error."""
    import lt_ray.engine as engine

    def broken(fn, **kwargs):
        def step(batch):
            raise RuntimeError("no C++ compiler found\ndetails")
        return step

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setitem(engine.COMPILE_AUTO_MIN_STEPS, "cpu", 1)
    cfg = tiny_cfg.replace({"train.epochs": 2})
    eager = run(resolve(cfg.replace({"train.compile": "off"})), None)
    with caplog.at_level("WARNING", logger="lt_ray.engine"):
        auto = run(resolve(cfg), None)
    warnings = [r.getMessage() for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert warnings == ["torch.compile failed (RuntimeError: no C++ compiler found); training "
                        "eagerly (train.compile=auto)"]
    assert auto.metrics["compiled"] is True
    assert [h["train_loss"] for h in auto.history] == [h["train_loss"] for h in eager.history]
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        run(resolve(cfg.replace({"train.compile": "on"})), None)
