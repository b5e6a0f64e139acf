"""The Train tab: the original page's form mapped onto lt-ray's config, started as
``lt-ray train`` in a Ray task, with live per-epoch curves and a stop button.

Form fields become ``--set`` keys (a blank number keeps the method's own default); the
GML fields (pretrained model, freeze, ensemble, t1, t2) apply when the method builds on a
stage-1 model. The run is validated here, as the CLI would, before anything starts.
"""

from __future__ import annotations

import secrets
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from lt_ray.checkpoint import checkpoint_file
from lt_ray.config import ExperimentConfig, parse_override
from lt_ray.data import DATASETS
from lt_ray.errors import LTRayError
from lt_ray.experiment import METRICS_FILE, read_progress, run_files
from lt_ray.losses import LOSSES
from lt_ray.methods import METHODS
from lt_ray.models import MODELS
from lt_ray.resolution import resolve
from lt_ray.rules import RULES
from lt_ray.tune.train_task import TrainOutcome, start_train, stop_train, train_outcome
from lt_ray.ui import status
from lt_ray.ui.locations import Places, checkpoints

METHOD_DEFAULT = "(the method's)"
NO_PRETRAINED = "(none: train from scratch)"
CURVES = {"acc_gm": (("acc", "Acc"), ("gm", "GM")), "hm_lr": (("hm", "HM"), ("lr", "LR"))}
SPLITS = ("val", "test")
TICK_S = 1.0
RUN_KEY = "lt-ray-train-run"  # the browser's record of the run it started (its token)
STOP_ALL_WAIT_S = 60.0  # at exit: how long the stopped runs get to checkpoint


@dataclass
class TrainRun:
    """One started run of a page session."""

    ref: Any  # the Ray task's ObjectRef
    out: Path
    command: str
    started: float = field(default_factory=time.time)
    stopping: bool = False
    outcome: TrainOutcome | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(16))  # its browser keeps it


@dataclass
class TrainForm:
    """The Train tab's fields (blank numbers: the method's defaults)."""

    dataset: str = "cifar10"
    imb_type: str = "exp"
    imb_factor: float | str | None = 100
    method: str = "ce"
    loss: str = METHOD_DEFAULT
    rule: str = METHOD_DEFAULT
    pretrained: str = NO_PRETRAINED
    freeze: str = "features"
    ensemble: str = "none"
    t1: float | str | None = 1.0
    t2: float | str | None = 1.0
    seed: float | str | None = 0
    epochs: float | str | None = None
    batch_size: float | str | None = None
    momentum: float | str | None = None
    arch: str = METHOD_DEFAULT
    weight_decay: float | str | None = None
    lr: float | str | None = None
    method_args: str = ""
    extra: str = ""


def _number(value: float | str | None, key: str) -> str | None:
    """A field's value as override text; blank: None (the method's default)."""
    if value is None or not str(value).strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise LTRayError(f"{key}: {str(value)!r} is not a number (blank: the method's "
                         "default)") from None
    return str(int(number)) if number.is_integer() else repr(number)


def form_overrides(form: TrainForm) -> list[str]:
    """The form as ``KEY=VALUE`` overrides, in the order the CLI would take them: fields, then
    ``method.args`` lines, then the extra ``--set`` lines (which win)."""
    sets = [f"data.dataset={form.dataset}", f"data.imb_type={form.imb_type}"]
    numbers = {"data.imb_factor": form.imb_factor, "seed": form.seed,
               "train.epochs": form.epochs, "train.batch_size": form.batch_size,
               "optim.momentum": form.momentum, "optim.weight_decay": form.weight_decay,
               "optim.lr": form.lr}
    sets += [f"{key}={text}" for key, value in numbers.items()
             if (text := _number(value, key)) is not None]
    sets += [f"{key}={value}" for key, value in (("method.loss", form.loss),
                                                  ("method.rule", form.rule),
                                                  ("model.arch", form.arch))
             if value and value != METHOD_DEFAULT]
    if METHODS.get(form.method).stage is not None:
        if form.pretrained and form.pretrained != NO_PRETRAINED:
            sets.append(f"pretrained.checkpoint={checkpoint_file(form.pretrained)}")
        if form.method == "gml":
            sets += [f"method.args.freeze={form.freeze}", f"method.args.ensemble={form.ensemble}"]
            sets += [f"method.args.{key}={text}" for key, value in (("t1", form.t1),
                                                                    ("t2", form.t2))
                     if (text := _number(value, f"method.args.{key}")) is not None]
    elif form.pretrained and form.pretrained != NO_PRETRAINED:
        raise LTRayError(f"method {form.method!r} trains from scratch and uses no pretrained "
                         "model; pick none, or a plug-in such as gml")
    for line in form.method_args.splitlines():
        if line.strip():
            sets.append(f"method.args.{line.strip()}")
    sets += [line.strip() for line in form.extra.splitlines() if line.strip()]
    return sets


def run_folder(runs: Path, name: str) -> Path:
    """``runs/NAME`` (a new name: ``ui-<time>``); an LTRayError for a name that is a path or
    a folder that holds a run or anything else."""
    name = name.strip() or time.strftime("ui-%Y%m%d-%H%M%S")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise LTRayError(f"run name {name!r}: give a plain folder name (no / or leading .)")
    out = runs / name
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LTRayError(f"run folder {out} already exists; give another run name (the CLI "
                         "continues a run with lt-ray train --resume)")
    return out


def plan(form: TrainForm, name: str, places: Places) -> tuple[list[str], Path]:
    """Validate the run as ``lt-ray train`` would (config, stage, run folder) and return its
    arguments and folder; nothing is written."""
    if form.method not in METHODS:
        raise LTRayError(f"method: {METHODS.unknown_message(form.method)}")
    sets = form_overrides(form)
    changes = dict(parse_override(text) for text in sets)
    changes["method.name"] = form.method
    resolve(ExperimentConfig.from_dict({}).replace(changes))
    out = run_folder(places.runs, name)
    argv = ["--method", form.method]
    for text in sets:
        argv += ["--set", text]
    argv += ["--out", str(out), "--artifacts", places.artifacts]
    argv += ["--data-root", places.data_root] if places.data_root else []
    return argv, out


def curves(records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The two charts' long frames (epoch, value in %, series) from the progress records."""
    frames = {}
    for chart, metrics in CURVES.items():
        rows = [{"epoch": r["epoch"], "value": 100 * r[f"{split}_{key}"],
                 "series": f"{split} {label}"}
                for r in records for key, label in metrics for split in SPLITS
                if isinstance(r.get(f"{split}_{key}"), int | float)]
        frames[chart] = pd.DataFrame(rows, columns=["epoch", "value", "series"])
    return frames


def epoch_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A row per evaluated epoch: its loss and the val/test metrics in %."""
    percent = [f"{s}_{m}" for s in SPLITS for m in ("acc", "gm", "hm", "lr")]
    rows = [{"epoch": r["epoch"], "train_loss": round(r.get("train_loss") or 0.0, 4),
             **{c: round(100 * r[c], 2) for c in percent if isinstance(r.get(c), int | float)}}
            for r in records]
    return pd.DataFrame(rows, columns=["epoch", "train_loss", *percent])


def reserve(out: Path) -> None:
    """Create the run folder now (atomically): two pages that picked one name cannot both
    start a run in it."""
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        if any(out.iterdir()):
            raise LTRayError(f"run folder {out} was just taken; give another run name") \
                from None


def stop_all(runs: list[TrainRun], wait_s: float = STOP_ALL_WAIT_S) -> int:
    """Stop the runs still going and wait (up to ``wait_s``) for them to checkpoint; how many
    were stopped."""
    going = [run for run in runs if run.outcome is None and train_outcome(run.ref) is None]
    for run in going:
        stop_train(run.ref)
    deadline = time.time() + wait_s
    waiting = list(going)
    while waiting and time.time() < deadline:
        time.sleep(0.5)
        waiting = [run for run in waiting if train_outcome(run.ref) is None]
    return len(going)


def started_by(token: str | None, started: list[TrainRun]) -> TrainRun | None:
    """The run of ``started`` whose token a browser kept; None for an unknown one (a server
    started since, or no run)."""
    return next((run for run in started if token and run.token == token), None)


def build(places: Places, session: gr.State, page: gr.Blocks, remembered: gr.BrowserState, *,
          gpus: float, started: list[TrainRun]) -> None:
    """The tab's components and events (inside a ``gr.Tab`` of ``page``); ``started`` collects
    the runs this page starts. A browser keeps the token of the run it started in
    ``remembered`` (:data:`RUN_KEY`), so a reloaded page takes that run back (curves, Stop);
    other browsers never see it."""
    ckpts = checkpoints(places)
    with gr.Row():
        dataset = gr.Dropdown(DATASETS.names(), value="cifar10", label="dataset",
                              elem_id="train-dataset")
        imb_type = gr.Dropdown(["exp", "step"], value="exp", label="imbalance type")
        imb_factor = gr.Number(100, label="imbalance factor", elem_id="train-imb-factor")
        method = gr.Dropdown(METHODS.names(), value="ce", label="method", elem_id="train-method")
        loss = gr.Dropdown([METHOD_DEFAULT, *LOSSES.names()], value=METHOD_DEFAULT,
                           label="loss type")
        rule = gr.Dropdown([METHOD_DEFAULT, *RULES.names()], value=METHOD_DEFAULT,
                           label="train rule")
    with gr.Accordion("pretrained model (GML plug-in: method gml)", open=False):
        with gr.Row():
            pretrained = gr.Dropdown([NO_PRETRAINED, *[(label, path) for label, path in ckpts]],
                                     value=NO_PRETRAINED, allow_custom_value=True,
                                     label="pretrained model (run folder or artifact)",
                                     elem_id="train-pretrained", scale=3)
            freeze = gr.Radio(["features", "all"], value="features",
                              label="freeze feature extraction / freeze all")
            ensemble = gr.Radio(["none", "prob", "logit"], value="none", label="ensemble")
            t1 = gr.Number(1.0, label="t1 (new model)")
            t2 = gr.Number(1.0, label="t2 (old model)")
    with gr.Row():
        seed = gr.Number(0, label="seed", precision=0)
        epochs = gr.Textbox(label="epochs", placeholder=METHOD_DEFAULT, elem_id="train-epochs")
        batch_size = gr.Textbox(label="batch size", placeholder=METHOD_DEFAULT)
        momentum = gr.Textbox(label="momentum", placeholder=METHOD_DEFAULT)
        arch = gr.Dropdown([METHOD_DEFAULT, *MODELS.names()], value=METHOD_DEFAULT,
                           label="architecture")
        weight_decay = gr.Textbox(label="weight decay", placeholder=METHOD_DEFAULT)
        lr = gr.Textbox(label="learning rate", placeholder=METHOD_DEFAULT)
    with gr.Row():
        method_args = gr.Textbox(label="method args (KEY=VALUE per line: method.args.KEY)",
                                 lines=2, placeholder="e.g. num_experts=3")
        extra = gr.Textbox(label="more --set keys (KEY=VALUE per line; they win)", lines=2,
                           placeholder="e.g. train.eval_every=1", elem_id="train-extra")
    with gr.Row():
        name = gr.Textbox(label=f"save model as (run folder under {places.runs})",
                          placeholder="blank: ui-<date>-<time>", elem_id="train-name")
        cpus = gr.Number(1, label="CPUs (Ray task)")
        gpu = gr.Number(gpus, label="GPUs (fraction of one)")
        start = gr.Button("Start", variant="primary", elem_id="train-start")
        stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
    line = gr.HTML(elem_id="train-status")
    command = gr.Textbox(label="the command it runs", interactive=False, lines=2,
                         elem_id="train-command")
    with gr.Row():
        acc_gm = gr.LinePlot(x="epoch", y="value", color="series", y_lim=[0, 100],
                             title="Acc / GM per epoch (%)", elem_id="train-acc-gm")
        hm_lr = gr.LinePlot(x="epoch", y="value", color="series", y_lim=[0, 100],
                            title="HM / LR per epoch (%)", elem_id="train-hm-lr")
    table = gr.Dataframe(label="evaluated epochs (%)", interactive=False,
                         elem_id="train-epochs-table")
    timer = gr.Timer(TICK_S, active=False)
    fields = [dataset, imb_type, imb_factor, method, loss, rule, pretrained, freeze, ensemble,
              t1, t2, seed, epochs, batch_size, momentum, arch, weight_decay, lr, method_args,
              extra]

    @status.shows_errors(line)
    def on_start(state: dict[str, Any], run_name: str, n_cpus: float, n_gpus: float,
                 *values: Any) -> dict[Any, Any]:
        current: TrainRun | None = state.get("train")
        if current is not None and current.outcome is None:
            raise LTRayError(f"a run is going in {current.out}; stop it first")
        form = TrainForm(*values)
        argv, out = plan(form, run_name, places)
        if not n_cpus or n_cpus <= 0 or n_gpus is None or n_gpus < 0:
            raise LTRayError("CPUs must be > 0 and GPUs >= 0")
        shown = shlex.join(["lt-ray", "train", *argv])
        reserve(out)
        try:
            ref = start_train(argv, cpus=float(n_cpus), gpus=float(n_gpus))
        except BaseException:
            _remove_empty(out)
            raise
        state["train"] = TrainRun(ref, out, shown)
        started.append(state["train"])
        empty = curves([])
        return {line: status.ok(f"started: run folder {out}"), command: shown,
                acc_gm: empty["acc_gm"], hm_lr: empty["hm_lr"], table: epoch_table([]),
                timer: gr.Timer(active=True), remembered: state["train"].token}

    @status.shows_errors(line)
    def on_load(state: dict[str, Any], token: str | None) -> dict[Any, Any]:
        run = started_by(token, started)
        if run is None:
            return {remembered: None}
        state["train"] = run
        return {line: status.ok(f"back to the run in {run.out}"), command: run.command,
                timer: gr.Timer(active=True)}

    @status.shows_errors(line)
    def on_tick(state: dict[str, Any]) -> dict[Any, Any]:
        run: TrainRun | None = state.get("train")
        if run is None:
            return {timer: gr.Timer(active=False)}
        run.outcome = run.outcome or train_outcome(run.ref)  # first: then no epoch is missed
        records = read_progress(run.out)
        frames = curves(records)
        update: dict[Any, Any] = {acc_gm: frames["acc_gm"], hm_lr: frames["hm_lr"],
                                  table: epoch_table(records)}
        if run.outcome is None:
            last = f", epoch {records[-1]['epoch']} done" if records else ""
            verb = "stopping" if run.stopping else "running"
            update[line] = status.ok(f"{verb} ({time.time() - run.started:.0f} s{last}): "
                                     f"run folder {run.out}")
            return update
        update[timer] = gr.Timer(active=False)
        outcome = run.outcome
        if outcome.returncode == 0:
            update[line] = status.ok(f"finished: results in {run.out} "
                                     f"({run.out / METRICS_FILE})")
        elif outcome.stopped or outcome.returncode == 130:
            update[line] = status.ok(f"stopped: {outcome.message}")
        else:
            update[line] = status.error(outcome.message.removeprefix("error: "))
        if outcome.returncode != 0 and not any(p.exists() for p in run_files(run.out)):
            _remove_empty(run.out)
        return update

    @status.shows_errors(line)
    def on_stop(state: dict[str, Any]) -> dict[Any, Any]:
        run: TrainRun | None = state.get("train")
        if run is None or run.outcome is not None:
            return {line: status.ok("no run is going")}
        stop_train(run.ref)
        run.stopping = True
        return {line: status.ok(f"stopping: the run keeps its last epoch in {run.out}")}

    outputs = [line, command, acc_gm, hm_lr, table, timer]
    start.click(on_start, [session, name, cpus, gpu, *fields], [*outputs, remembered])
    page.load(on_load, [session, remembered], [*outputs, remembered])
    timer.tick(on_tick, [session], outputs)
    stop.click(on_stop, [session], outputs)


def _remove_empty(folder: Path) -> None:
    """A failed run's folder, when it holds nothing (no half-made run left behind)."""
    try:
        folder.rmdir()
    except OSError:
        pass
