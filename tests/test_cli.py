import json

import pytest
from click.testing import CliRunner

from conftest import HAS_CIFAR10, SHARED_DATA, tiny_overrides
from lt_ray.cli import main
from lt_ray.metrics import EVAL_SPLITS, METRICS


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def train_tiny(out, *extra):
    """One-epoch tiny synthetic run into ``out``."""
    return invoke("train", *tiny_overrides(), "--set", "train.epochs=1", *extra, "--out", str(out))


def test_train_writes_metrics_checkpoint_and_config(tmp_path):
    out = tmp_path / "run"
    res = invoke("train", "--method", "bsce", *tiny_overrides(), "--out", str(out))
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    for split in EVAL_SPLITS:
        for m in METRICS:
            assert f"{split}_{m}" in metrics
    assert metrics["config"]["method"]["name"] == "bsce"
    assert sum(metrics["train_class_counts"]) == metrics["num_train_images"]
    assert len(metrics["per_class_recall"]["test"]) == 4
    assert len(metrics["history"]) == 2
    assert (out / "checkpoint.pt").is_file() and (out / "config.yaml").is_file()
    assert "epoch 2/2" in res.output and "fulltest" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "ldamm"], "unknown method 'ldamm'; did you mean ldam_drw"),
        (["--set", "optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
        (["--set", "train.epochs=abc"], "train.epochs' must be an integer"),
        (["--set", "train.epochs=0"], "train.epochs must be > 0"),
        (["--set", "data.imb_factor=0.01"], "did you mean 100"),
        (["--set", "data.imb_factor=0"], "data.imb_factor"),
        (["--set", "method.loss=focall"], "unknown loss 'focall'"),
        (["--set", "method.rule=drwx"], "unknown train rule 'drwx'"),
        (["--set", "model.arch=resnet33"], "unknown model 'resnet33'"),
        (["--set", "data.dataset=cifar1000"], "unknown dataset 'cifar1000'"),
        (["--set", "method.loss=focal", "--set", "method.loss_args.gamm=2"],
         "no hyper-parameter 'gamm'"),
        (["--set", "train.precision=fp8"], "train.precision"),
        (["--set", "optim.lr"], "KEY=VALUE"),
    ],
)
def test_bad_input_exits_2_with_one_message_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    res = invoke("train", *tiny_overrides(), *args, "--out", str(out))
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists()


def test_missing_data_folder_is_explained(tmp_path):
    out = tmp_path / "run"
    res = invoke("train", "--set", "data.dataset=cifar10", "--set", "data.download=false",
                 "--data-root", str(tmp_path / "nowhere"), "--out", str(out))
    assert res.exit_code == 2
    assert "nowhere" in res.output and "cifar-10-batches-py" in res.output
    assert not out.exists()


def test_bad_yaml_config_file(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("optim:\n  lr: [0.1\n")
    res = invoke("train", "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert res.exit_code == 2 and "exp.yaml:" in res.output


def test_out_with_another_run_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    assert train_tiny(out).exit_code == 0
    before = (out / "metrics.json").read_text()
    res = train_tiny(out)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "metrics.json").read_text() == before
    res = train_tiny(out, "--overwrite")
    assert res.exit_code == 0


def test_resume_refuses_a_different_config(tmp_path):
    out = tmp_path / "run"
    assert train_tiny(out).exit_code == 0
    res = train_tiny(out, "--set", "optim.lr=0.01", "--resume")
    assert res.exit_code == 2 and "different config" in res.output


def test_corrupt_checkpoint_on_resume_is_exit_2(tmp_path):
    out = tmp_path / "run"
    assert train_tiny(out).exit_code == 0
    (out / "checkpoint.pt").write_bytes(b"\x00garbage")
    res = train_tiny(out, "--resume")
    assert res.exit_code == 2 and "checkpoint.pt" in res.output


def test_list_shows_every_registry_with_hyperparameters():
    res = invoke("list")
    assert res.exit_code == 0
    for name in ("cifar10", "cifar100", "synthetic", "resnet32", "normed", "ldam_drw", "gml",
                 "max_m=0.5", "gamma=1.0", "start_fraction=0.8", "class_aware"):
        assert name in res.output


def test_help_on_every_command():
    for cmd in ([], ["train"], ["list"]):
        res = invoke(*cmd, "--help")
        assert res.exit_code == 0 and "Usage" in res.output


@pytest.mark.realdata
@pytest.mark.skipif(not HAS_CIFAR10, reason="real CIFAR-10 not present in ../shared/data")
def test_real_cifar10_bsce_one_epoch_has_every_key_and_12406_images(tmp_path):
    out = tmp_path / "run"
    res = invoke("train", "--method", "bsce", "--set", "data.dataset=cifar10",
                 "--set", "data.imb_factor=100", "--set", "train.epochs=1",
                 "--data-root", str(SHARED_DATA), "--out", str(out))
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_train_images"] == 12406
    assert metrics["train_class_counts"] == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    for split in EVAL_SPLITS:
        for m in METRICS:
            assert f"{split}_{m}" in metrics
    assert len(metrics["per_class_recall"]["fulltest"]) == 10


def test_overwrite_with_missing_data_keeps_the_previous_run(tmp_path):
    out = tmp_path / "run"
    assert train_tiny(out).exit_code == 0
    res = invoke("train", "--set", "data.dataset=cifar10", "--set", "data.download=false",
                 "--data-root", str(tmp_path / "nowhere"), "--out", str(out), "--overwrite")
    assert res.exit_code == 2
    assert (out / "metrics.json").is_file() and (out / "checkpoint.pt").is_file()
