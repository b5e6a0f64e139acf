import json
from pathlib import Path

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
        (["--set", "optim.weight_decay=-5e-4"], "optim.weight_decay must be a number >= 0"),
        (["--method", "focal", "--set", "method.loss_args.gamma=abc"],
         "config key 'method.loss_args.gamma' must be a number, got 'abc'"),
        (["--method", "focal", "--set", "method.loss_args.gamma=-2e0"],
         "focal loss: method.loss_args.gamma must be >= 0, got -2.0"),
        (["--method", "ldam_drw", "--set", "model.head=linear"], "set model.head=normed"),
        (["--set", "method.loss=ldam"], "set model.head=normed"),
        (["--method", "lade", "--set", "method.rule=drw"],
         "loss 'lade' ignores class weights, so train rule 'drw' would do nothing"),
        (["--set", "train.device=gpu"], "train.device='gpu' is not a device"),
        (["--set", "method.rule_args.beta=0.9"], "train rule 'none' has no hyper-parameter"),
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


def test_scientific_notation_in_set_values():
    from lt_ray.cli import load_config
    from lt_ray.resolution import resolve

    cfg = load_config(None, "focal", ("optim.weight_decay=5e-4", "method.loss_args.gamma=2e0",
                                      "optim.lr=1E-1"))
    resolved = resolve(cfg)
    assert cfg.optim.weight_decay == 5e-4 and cfg.optim.lr == 0.1
    assert resolved.config.method.loss_args == {"gamma": 2.0}


def test_train_records_the_resolved_recipe(tmp_path):
    import torch
    import yaml

    out = tmp_path / "run"
    res = invoke("train", "--method", "ldam_drw", *tiny_overrides(), "--set", "train.epochs=1",
                 "--set", "optim.weight_decay=5e-4", "--out", str(out))
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"]["loss"] == "ldam" and saved["method"]["rule"] == "drw"
    assert saved["model"]["head"] == "normed"
    assert saved["method"]["loss_args"] == {"max_m": 0.5, "s": 30.0}
    assert saved["method"]["rule_args"] == {"beta": 0.9999, "start_fraction": 0.8}
    assert saved["optim"]["weight_decay"] == 5e-4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"] == saved
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"] == saved
    res = invoke("train", "--method", "ldam_drw", *tiny_overrides(), "--set", "train.epochs=1",
                 "--set", "optim.weight_decay=5e-4", "--set", "method.loss_args.s=30",
                 "--out", str(out), "--resume")  # the same resolved config: resumable
    assert res.exit_code == 0, res.output


def test_cuda_missing_is_a_runtime_error_that_writes_nothing(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    res = invoke("train", *tiny_overrides(), "--set", "train.device=cuda", "--out", str(out))
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert "train.device='cuda' but CUDA is not available" in res.output
    assert not out.exists()


def test_sweep_set_overrides_the_base_and_shows_it(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("base: {data: {dataset: synthetic}, train: {epochs: 2}}\n"
                    "grid: {method.name: [ce, bsce]}\n"
                    "space: {optim.lr: {loguniform: [0.01, 0.1]}}\n")
    res = invoke("sweep", str(path), "--dry-run", "--set", "train.epochs=30",
                 "--set", "optim.weight_decay=5e-4")
    assert res.exit_code == 0, res.output
    assert "overrides (--set): train.epochs=30, optim.weight_decay=0.0005" in res.output
    assert "epochs: 30" in res.output and "weight_decay: 0.0005" in res.output
    for args, message in [
        (["--set", "method.name=focal"], "--set method.name: method.name is a grid axis"),
        (["--set", "optim.lr=0.1"], "--set optim.lr: optim.lr is searched"),
        (["--set", "optim={lr: 0.1}"], "optim.lr is searched"),
        (["--set", "train.epochs=0"], "train.epochs must be > 0"),
        (["--set", "grid.optim.lr=[0.1]"], "--set grid.optim.lr: optim.lr is not a grid axis "
                                            "of this study (axes: method.name)"),
        (["--set", "search.metric=val_bogus"], "val_bogus"),
        (["--set", "search=3"], "--set search: name a key inside it"),
        (["--set", "train.epochs"], "KEY=VALUE"),
    ]:
        res = invoke("sweep", str(path), "--dry-run", *args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output
        assert [line for line in res.output.splitlines() if line] == [res.output.strip()]
    assert "--set KEY=VALUE" in invoke("sweep", "--help").output


def test_sweep_set_sizes_the_study_sections(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("base: {data: {dataset: synthetic}, train: {epochs: 2}}\n"
                    "grid: {method.name: [ce, bsce, focal]}\n"
                    "space: {optim.lr: {loguniform: [0.01, 0.1]}}\n"
                    "search: {num_samples: 8}\n")
    res = invoke("sweep", str(path), "--dry-run", "--set", "grid.method.name=[bsce]",
                 "--set", "search.num_samples=2", "--set", "repeat.seeds=[1,2]")
    assert res.exit_code == 0, res.output
    assert "1 grid cell(s) x 2 trials" in res.output
    assert "method.name=bsce" in res.output and "method.name=focal" not in res.output


def test_list_shows_declared_heads_and_weights():
    res = invoke("list")
    assert "max_m=0.5, s=30.0  [head normed]" in res.output
    assert "[head linear, ignores class weights]" in res.output


@pytest.mark.parametrize("name", ["../../etc", "my study", "x" * 400, "ü" * 200, "", "-lead",
                                  "a/b"])
def test_study_names_are_short_slugs_from_the_flag_and_the_yaml(tmp_path, name):
    """--name and the YAML's name: follow one rule; a path, a space or an over-long name is
    refused before anything is planned (--name ../../etc planned a folder outside the
    storage)."""
    space = tmp_path / "s.yaml"
    space.write_text(json.dumps({"base": {"method": {"name": "ce"}}}))
    storage = tmp_path / "res"
    res = invoke("sweep", str(space), "--dry-run", "--storage", str(storage), "--name", name)
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1 and "--name=" in lines[0], res.output
    assert "is not a study name" in lines[0]
    space.write_text(json.dumps({"name": name, "base": {"method": {"name": "ce"}}}))
    res = invoke("sweep", str(space), "--dry-run", "--storage", str(storage))
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1 and "name=" in lines[0], res.output
    assert not storage.exists()


def test_a_valid_study_name_is_planned(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(json.dumps({"base": {"method": {"name": "ce"}}}))
    res = invoke("sweep", str(space), "--dry-run", "--storage", str(tmp_path / "res"),
                 "--name", "gml_cifar-10")
    assert res.exit_code == 0, res.output
    assert f"results: {tmp_path / 'res' / 'gml_cifar-10'}" in res.output


@pytest.mark.parametrize(("space", "override", "needle"), [
    ("quickstart", "grid.method.loss=[focal]", "['focal'] is not among the axis's values"),
    ("gml", "grid.data.imb_factor=[100,200]", "[200] is not among the axis's values"),
])
def test_grid_overrides_only_keep_existing_values(space, override, needle):
    path = Path(__file__).resolve().parents[1] / "search_spaces" / f"{space}.yaml"
    res = invoke("sweep", str(path), "--dry-run", "--set", override)
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1 and needle in lines[0], res.output


def test_train_out_refuses_unrelated_files_and_bad_paths(tmp_path):
    """--out: a non-empty folder without a run, a path below a file, an over-long folder name
    and a URI are refused with one line, before anything is written."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    res = invoke("train", *tiny_overrides(), "--out", str(busy))
    assert res.exit_code == 2 and "is not empty (1 entries, e.g. 'notes.txt')" in res.output
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [(str(a_file / "sub"), "which is a file"), (str(tmp_path / ("x" * 300)), "bytes"),
             (str(tmp_path / ("ü" * 200)), "bytes"), ("s3:/bucket/run", "one slash"),
             ("s3://bucket/run", "local folder")]
    for out, needle in cases:
        res = invoke("train", *tiny_overrides(), "--out", out)
        lines = [line for line in res.output.splitlines() if line.startswith("error:")]
        assert res.exit_code == 2 and len(lines) == 1 and needle in lines[0], (out, res.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "file"]


@pytest.mark.parametrize(("storage", "needle"), [
    ("ftp://x/y", "pyarrow cannot open ftp:// storage"),
    ("foo://bucket/p", "pyarrow cannot open foo:// storage"),
    ("s3:/x", "did you mean 's3://x'"),
])
def test_sweep_storage_is_checked_before_planning(tmp_path, storage, needle):
    space = tmp_path / "s.yaml"
    space.write_text(json.dumps({"base": {"method": {"name": "ce"}}}))
    res = invoke("sweep", str(space), "--dry-run", "--storage", storage)
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1 and needle in lines[0], res.output


def test_sweep_storage_inside_a_file_is_refused(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(json.dumps({"base": {"method": {"name": "ce"}}}))
    for storage in (space, space / "sub"):
        res = invoke("sweep", str(space), "--dry-run", "--storage", str(storage))
        assert res.exit_code == 2 and "a file; give a folder" in res.output, res.output


@pytest.mark.parametrize(("args", "needle"), [
    (["predict", "--checkpoint", "x", "--top-k", "many", "img.png"],
     "Invalid value for '--top-k': 'many' is not a valid integer. (see "),
    (["sweep", "s.yaml", "--num-samples", "0"], "Invalid value for '--num-samples'"),
    (["train"], "Missing option '--out'"),
    (["bogus"], "No such command 'bogus'"),
])
def test_usage_errors_are_one_line(args, needle):
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [res.output.strip()]  # one line
    assert res.output.startswith("error: ") and needle in res.output


def test_ctrl_c_of_train_says_how_to_resume_and_the_resume_finishes(tmp_path):
    """SIGINT mid-run (Ctrl-C): one line naming the checkpoint and the exact command that
    continues it, exit 130; that command then finishes the run from the saved epoch."""
    import os
    import shlex
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lt_ray.cli", "train", *tiny_overrides(),
           "--set", "train.epochs=30", "--set", "data.synthetic.n_max=1000", "--out", str(out)]
    # SIGINT as a terminal's Ctrl-C delivers it: a suite started in the background by a
    # non-interactive shell ignores SIGINT, and the run would inherit that (and finish)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: {out}/checkpoint.pt keeps the last finished epoch; "
                           "continue with: lt-ray ")
    again = shlex.split(last.split("continue with: ", 1)[1])
    assert again[-1] == "--resume" and "Traceback" not in err
    res = CliRunner().invoke(main, again[1:])
    assert res.exit_code == 0, res.output
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert len(history) == 30
