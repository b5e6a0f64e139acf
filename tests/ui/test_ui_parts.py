"""The web UI's parts without a browser: the Train form's mapping onto lt-ray's config, its
validation, the live progress file, the GML comparison's re-weighed ensemble, study listing and
the study launch's validation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("gradio")

from conftest import tiny_overrides  # noqa: E402
from lt_ray import retrain as R  # noqa: E402
from lt_ray.checkpoint import save_checkpoint  # noqa: E402
from lt_ray.cli import main  # noqa: E402
from lt_ray.errors import CheckpointError, ConfigError, LTRayError  # noqa: E402
from lt_ray.experiment import PROGRESS_FILE, read_progress  # noqa: E402
from lt_ray.tune.jobs import plan_launch  # noqa: E402
from lt_ray.ui.locations import Places, checkpoints, expand_studies  # noqa: E402
from lt_ray.ui.train_tab import (  # noqa: E402
    TrainForm,
    TrainRun,
    curves,
    form_overrides,
    plan,
    started_by,
)

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "analysis" / "cpu30" / "studies"


def places(tmp_path: Path) -> Places:
    return Places(runs=tmp_path / "runs", storage=str(tmp_path / "results"),
                  artifacts=str(tmp_path / "art"), data_root=None, work=tmp_path / "work")


def test_the_original_form_fields_become_set_keys_in_cli_order():
    form = TrainForm(dataset="cifar100", imb_type="step", imb_factor=50, method="gml",
                     loss="gml", pretrained="/runs/ce", freeze="all", ensemble="prob", t1=2,
                     t2="0.5", seed=3, epochs="10", batch_size="", momentum="0.8",
                     arch="resnet20", weight_decay="5e-4", lr="0.01",
                     method_args="init=scratch", extra="train.eval_every=1\n\n")
    assert form_overrides(form) == [
        "data.dataset=cifar100", "data.imb_type=step", "data.imb_factor=50", "seed=3",
        "train.epochs=10", "optim.momentum=0.8", "optim.weight_decay=0.0005", "optim.lr=0.01",
        "method.loss=gml", "model.arch=resnet20", "pretrained.checkpoint=/runs/ce",
        "method.args.freeze=all", "method.args.ensemble=prob", "method.args.t1=2",
        "method.args.t2=0.5", "method.args.init=scratch", "train.eval_every=1"]


def test_blank_fields_keep_the_methods_defaults_and_a_bad_number_is_named():
    sets = form_overrides(TrainForm(method="ldam_drw", seed=None, imb_factor=""))
    assert sets == ["data.dataset=cifar10", "data.imb_type=exp"]  # no loss/rule/lr forced
    with pytest.raises(LTRayError, match=r"optim.lr: 'fast' is not a number"):
        form_overrides(TrainForm(lr="fast"))


def test_plan_validates_like_the_cli_and_writes_nothing(tmp_path):
    where = places(tmp_path)
    with pytest.raises(ConfigError, match="optim.lrr"):
        plan(TrainForm(extra="optim.lrr=0.1"), "a", where)
    with pytest.raises(LTRayError, match="trains from scratch and uses no pretrained"):
        plan(TrainForm(method="ce", pretrained="/x"), "a", where)
    with pytest.raises(LTRayError, match="plain folder name"):
        plan(TrainForm(), "../elsewhere", where)
    (where.runs / "taken").mkdir(parents=True)
    (where.runs / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(LTRayError, match="already exists"):
        plan(TrainForm(), "taken", where)
    assert sorted(p.name for p in where.runs.iterdir()) == ["taken"]
    argv, out = plan(TrainForm(epochs="3"), "fresh", where)
    assert out == where.runs / "fresh" and not out.exists()
    assert argv[:2] == ["--method", "ce"] and argv[-4:] == [
        "--out", str(out), "--artifacts", str(tmp_path / "art")]


def test_a_reloaded_page_gets_back_only_the_run_whose_token_its_browser_kept(tmp_path):
    mine, theirs = (TrainRun(ref=None, out=tmp_path / n, command="") for n in ("a", "b"))
    assert mine.token != theirs.token and len(mine.token) == 32
    assert started_by(mine.token, [theirs, mine]) is mine
    for kept in (None, "", theirs.token[:8], str(mine.out)):  # none, a guess, a folder name
        assert started_by(kept, [mine]) is None


def test_a_run_writes_its_progress_line_by_line_as_the_history(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--method", "ce", *tiny_overrides(),
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    records = read_progress(out)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records == history  # the same records, as each epoch ended
    frames = curves(records)
    acc = frames["acc_gm"]
    assert list(acc.series.unique()) == ["val Acc", "test Acc", "val GM", "test GM"]
    first = acc[(acc.epoch == 1) & (acc.series == "test Acc")].value.item()
    assert first == pytest.approx(100 * records[0]["test_acc"])
    assert len(frames["hm_lr"]) == 2 * 4  # epochs x (val, test) x (HM, LR)


def test_reading_progress_skips_a_line_being_written_and_counts_a_resumed_epoch_once(tmp_path):
    lines = [{"epoch": 1, "val_acc": 0.1}, {"epoch": 2, "val_acc": 0.2},
             {"epoch": 2, "val_acc": 0.25}]  # epoch 2 again after a resume
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"epoch": 3, "val_'
    (tmp_path / PROGRESS_FILE).write_text(text)
    assert read_progress(tmp_path) == [{"epoch": 1, "val_acc": 0.1},
                                       {"epoch": 2, "val_acc": 0.25}]
    assert read_progress(tmp_path / "none") == []


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base") / "ce"
    sets = tiny_overrides() + ["--set", "train.epochs=6"]
    res = CliRunner().invoke(main, ["train", "--method", "ce", *sets, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_compare_re_trains_on_the_bases_data_and_re_weighs_without_training(base, tmp_path):
    cfg = R.compare_config(base, loss="bsce", epochs=3, ensemble_mode="prob", t1=1.5, t2=0.75)
    assert cfg.data.dataset == "synthetic" and cfg.method.name == "gml"
    assert cfg.method.loss == "bsce" and cfg.pretrained["checkpoint"].endswith("checkpoint.pt")
    run = R.retrain(cfg, artifacts=str(tmp_path / "art"))
    assert run.base == "ce" and run.old.shape == run.new.shape == (32, 4)  # the test half
    table, recall = R.ensemble_scores(run, 1.5, 0.75)
    rows = table.set_index("output")
    for output in ("old", "new", "ens"):  # at the run's own t1/t2: the run's own metrics
        for metric in ("acc", "hm", "lr"):
            assert rows.loc[output, metric] == pytest.approx(
                100 * run.metrics[f"test_{metric}_{output}"])
    table, recall = R.ensemble_scores(run, 0.3, 4.0)  # new temperatures, by hand
    ens = torch.log(torch.softmax(run.new / 0.3, 1) + torch.softmax(run.old / 4.0, 1))
    acc = (ens.argmax(1) == run.targets).double().mean().item()
    assert table.set_index("output").loc["ens", "acc"] == pytest.approx(100 * acc)
    assert table.set_index("output").loc["old", "acc"] == rows.loc["old", "acc"]
    ens_recall = recall[recall.output == "ens"].sort_values("class_index")
    assert list(ens_recall.train_count) == run.class_counts.tolist()
    with pytest.raises(ConfigError, match="t1 must be > 0"):
        R.ensemble_scores(run, 0.0, 1.0)


def test_compare_refuses_a_foreign_checkpoint(tmp_path):
    foreign = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(CheckpointError, match="not an lt-ray checkpoint"):
        R.compare_config(foreign)


def test_the_page_lists_run_folders_and_artifacts(base, tmp_path):
    where = places(tmp_path)
    (where.runs / "nested").mkdir(parents=True)
    run = where.runs / "nested" / "ce"
    run.mkdir()
    for name in ("checkpoint.pt", "config.yaml"):
        (run / name).write_bytes((base / name).read_bytes())
    artifact = Path(where.artifacts) / "0123abcd"
    artifact.mkdir(parents=True)
    save_checkpoint(artifact / "checkpoint.pt", config={}, class_counts=[1], state_dict={})
    (artifact / "artifact.json").write_text(json.dumps(
        {"hash": "0123abcd", "method": "bsce", "fulltest_acc": 0.7034}))
    assert checkpoints(where) == [
        ("run nested/ce: ce on synthetic IF 10, 6 epochs", str(run)),
        ("artifact bsce 0123abcd, full-test acc 70.3%", str(artifact))]


def test_a_folder_of_studies_opens_in_the_order_they_ran(tmp_path):
    found = expand_studies([str(COMMITTED)])
    assert [Path(s).name for s in found] == [
        "cpu30_ce", "cpu30_crt", "cpu30_bsce", "cpu30_ldam_drw", "cpu30_lade", "cpu30_ride",
        "cpu30_paco", "cpu30_mislas"]  # analysis/run_cpu30.sh's order
    with pytest.raises(LTRayError, match="holds no study"):
        expand_studies([str(tmp_path)])
    with pytest.raises(LTRayError, match="pick a study folder"):
        expand_studies(["  "])


def test_a_study_launch_is_validated_before_anything_is_submitted(tmp_path):
    space = str(REPO / "search_spaces" / "quickstart.yaml")
    launch = plan_launch(space, storage_root=str(tmp_path), overrides=["train.epochs=2"],
                         data_root="/data")
    assert launch.command == ["lt-ray", "sweep", space, "--storage", str(tmp_path),
                              "--set", "train.epochs=2", "--data-root", "/data"]
    assert launch.study_dir == str(tmp_path / "quickstart")
    with pytest.raises(ConfigError, match="train.epoch"):
        plan_launch(space, storage_root=str(tmp_path), overrides=["train.epoch=2"])
    (tmp_path / "quickstart").mkdir()
    (tmp_path / "quickstart" / "study.json").write_text("{}")
    with pytest.raises(LTRayError, match="study 'quickstart' already exists in "):
        plan_launch(space, storage_root=str(tmp_path))
    with pytest.raises(LTRayError, match=r"holds no study \(study.json missing\)"):
        plan_launch(space, storage_root=str(tmp_path), name="other", resume=True)
    with pytest.raises(LTRayError, match="the study definition changed"):  # not this study
        plan_launch(space, storage_root=str(tmp_path), resume=True)


def test_lt_ray_ui_refuses_bad_options_in_one_line_before_starting_anything(tmp_path,
                                                                           monkeypatch):
    lt_logger = logging.getLogger("lt_ray")  # lt-ray ui sets up its logging: undone after
    monkeypatch.setattr(lt_logger, "propagate", lt_logger.propagate)
    monkeypatch.setattr(lt_logger, "handlers", list(lt_logger.handlers))
    runner = CliRunner()
    runs = tmp_path / "runs"
    res = runner.invoke(main, ["ui", "--data-root", str(tmp_path / "none"), "--runs", str(runs)])
    assert res.exit_code == 2 and res.output.strip() == (
        f"error: --data-root {tmp_path / 'none'}: no such folder")
    (tmp_path / "file").write_text("x")
    res = runner.invoke(main, ["ui", "--runs", str(tmp_path / "file")])
    assert res.exit_code == 2 and "--runs" in res.output and "is a file" in res.output
    res = runner.invoke(main, ["ui", "--port", "70000"])
    assert res.exit_code == 2 and res.output.startswith("error: Invalid value for '--port'")
    assert not runs.exists()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gradio" else real(name, *a))
    res = runner.invoke(main, ["ui"])
    assert res.exit_code == 2 and res.output.strip() == (
        "error: lt-ray ui needs the ui extra: pip install -e '.[ui]' (Gradio)")
