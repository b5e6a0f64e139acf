"""The Studies tab: open studies (folders or URIs) for the paper-layout table, the per-class and
learning-curve figures and the trial list; watch a running one from its storage; launch a
shipped study file, with ``--set`` overrides, as a Ray job."""

from __future__ import annotations

import itertools
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from lt_ray import storage
from lt_ray.analysis import analyze
from lt_ray.errors import LTRayError
from lt_ray.results import read_study
from lt_ray.tune import jobs, live
from lt_ray.tune.study_folder import TUNE_DIR, read_study_file
from lt_ray.ui import status
from lt_ray.ui.locations import Places, expand_studies, studies, study_files

REFRESH_S = 5.0
JOB_TICK_S = 2.0
JOB_KEY = "lt-ray-study-job"  # the browser's record of the job it launched
FIGURE_ORDER = ("comparison", "per_class", "learning_curves", "base_curves")
_reports = itertools.count()


def trial_list(study_dir: str) -> pd.DataFrame:
    """A row per trial (status, cell, objective, searched hyper-parameters): live from Tune's
    state while the study has one, else from its ``trials.parquet``."""
    if storage.exists(storage.join(study_dir, TUNE_DIR)):
        frame = live.trial_progress(study_dir)
        if frame is not None:
            return frame.assign(study=Path(study_dir).name)
    study = read_study_file(study_dir)
    metric = (study.get("metric") or ["val_hm"])[0]
    space = [f"cfg.{key}" for key in (study.get("spec") or {}).get("space") or {}]
    trials = read_study(study_dir).trials
    columns = [c for c in ["study", "trial_id", "status", "cell", "epochs_completed", metric,
                           *space] if c in trials.columns]
    return trials[columns].rename(columns=lambda c: c.removeprefix("cfg."))


def figures(out: str, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(PNG path, caption) of a report's figures: comparison, per-class, curves, the rest."""
    pngs = [n for n in names if n.endswith(".png")]

    def rank(name: str) -> int:
        stem = Path(name).stem
        return next((i for i, key in enumerate(FIGURE_ORDER) if stem.startswith(key)),
                    len(FIGURE_ORDER))

    return [(str(Path(out) / n), Path(n).stem.replace("_", " ")) for n in
            sorted(pngs, key=rank)]


def build(places: Places, session: gr.State, page: gr.Blocks, remembered: gr.BrowserState,
          dashboard_url: str | None, committed: tuple[Path, ...], *, local_ray: bool) -> None:
    """The tab's components and events (inside a ``gr.Tab`` of ``page``); a ``local_ray``'s
    jobs run this interpreter's lt-ray, a cluster's the ``lt-ray`` of its head. The browser
    keeps the job it launched in ``remembered`` (:data:`JOB_KEY`), so a reloaded page follows
    it again."""
    program = (sys.executable, "-m", "lt_ray.cli") if local_ray else ("lt-ray",)
    with gr.Row():
        chosen = gr.Dropdown(studies(places, committed) + [str(p) for p in committed],
                             multiselect=True, allow_custom_value=True,
                             label="studies (folders or URIs; a folder of studies opens all)",
                             elem_id="study-pick", scale=4)
        refresh = gr.Button("↻ list", scale=0)
        open_ = gr.Button("Open", variant="primary", elem_id="study-open", scale=0)
    line = gr.HTML(elem_id="study-status")
    table = gr.Markdown(elem_id="study-table")
    gallery = gr.Gallery(label="figures (click one to enlarge)", columns=3, height=520,
                         object_fit="contain", elem_id="study-figures")
    progress = gr.HTML(elem_id="study-progress")
    trials = gr.Dataframe(label="trials", interactive=False, elem_id="study-trials")
    watch = gr.Timer(REFRESH_S, active=False)
    with gr.Accordion("launch a study as a Ray job", open=False):
        with gr.Row():
            space = gr.Dropdown(study_files(), label="study file", allow_custom_value=True,
                                elem_id="launch-space", scale=3)
            name = gr.Textbox(label="study name (blank: the file's)")
            resume = gr.Checkbox(label="resume it")
        overrides = gr.Textbox(label="--set overrides (KEY=VALUE per line)", lines=3,
                               placeholder="e.g. train.epochs=30\nsearch.num_samples=4",
                               elem_id="launch-overrides")
        with gr.Row():
            launch = gr.Button("Launch", variant="primary", elem_id="launch-start")
            stop = gr.Button("Stop the job", variant="stop")
        job_line = gr.HTML(elem_id="launch-status")
        job_log = gr.Code(label="job log (tail)", language="shell", interactive=False,
                          elem_id="launch-log")
        job_timer = gr.Timer(JOB_TICK_S, active=False)

    def listed(locations: list[str]) -> tuple[str, pd.DataFrame | None, bool]:
        frames = [trial_list(s) for s in locations]
        frame = pd.concat(frames, ignore_index=True) if frames else None
        if frame is None or frame.empty:
            return "no trials yet", frame, True
        running = live.is_running(frame)
        return (f"{live.describe(frame)}" + (" (watching: refreshed every "
                f"{REFRESH_S:g} s)" if running else ""), frame, running)

    @status.shows_errors(line)
    def on_open(state: dict[str, Any], picked: list[str] | None) -> dict[Any, Any]:
        locations = expand_studies(list(picked or []))
        state["studies"] = locations
        summary, frame, running = listed(locations)
        update: dict[Any, Any] = {trials: frame, progress: status.ok(summary),
                                  watch: gr.Timer(active=running)}
        if not all(storage.exists(storage.join(s, "trials.parquet")) for s in locations):
            update.update({table: "", gallery: [], line: status.ok(
                "no results exported yet: the table and figures appear when the study "
                "ends (its trials are listed below as they run)")})
            return update
        out = places.work / f"report-{next(_reports)}"
        report = analyze(locations, out=str(out))
        previous = state.get("report")
        if previous is not None:  # this page's last report: its figures are shown no more
            shutil.rmtree(previous, ignore_errors=True)
        state["report"] = out
        update.update({table: report.markdown, gallery: figures(report.out, report.figures),
                       line: status.ok(f"{len(locations)} study(ies): {report.layout} table of "
                                       f"{len(report.table)} row(s)")})
        return update

    @status.shows_errors(progress)
    def on_watch(state: dict[str, Any]) -> dict[Any, Any]:
        locations = state.get("studies") or []
        summary, frame, running = listed(locations)
        return {trials: frame, progress: status.ok(summary), watch: gr.Timer(active=running)}

    @status.shows_errors(job_line)
    def on_launch(state: dict[str, Any], file: str | None, study_name: str, again: bool,
                  text: str) -> dict[Any, Any]:
        if not file:
            raise LTRayError("pick a study file (search_spaces/*.yaml)")
        sets = [s.strip() for s in text.splitlines() if s.strip()]
        plan = jobs.plan_launch(file, storage_root=places.storage, overrides=sets,
                                name=study_name.strip() or None, data_root=places.data_root,
                                resume=again)
        job_id = jobs.submit(plan, dashboard_url, program=program)
        state["job"] = (job_id, plan.study_dir, time.time())
        return {job_line: status.ok(f"job {job_id} submitted: {' '.join(plan.command)}; "
                                    f"study folder {plan.study_dir}"),
                job_timer: gr.Timer(active=True), remembered: list(state["job"])}

    @status.shows_errors(job_line)
    def on_load(state: dict[str, Any], kept: list[Any] | None) -> dict[Any, Any]:
        if not kept or not dashboard_url:
            return {remembered: None}
        job_id, study_dir, started = kept
        try:
            jobs.job_state(job_id, dashboard_url)
        except LTRayError:  # a job of a Ray that has stopped since
            return {remembered: None}
        state["job"] = (job_id, study_dir, started)
        return {job_line: status.ok(f"job {job_id}: following it again"),
                job_timer: gr.Timer(active=True)}

    @status.shows_errors(job_line)
    def on_job_tick(state: dict[str, Any]) -> dict[Any, Any]:
        job = state.get("job")
        if job is None:
            return {job_timer: gr.Timer(active=False)}
        job_id, study_dir, started = job
        state_name, log = jobs.job_state(job_id, dashboard_url)
        done = state_name in ("SUCCEEDED", "FAILED", "STOPPED")
        return {job_line: status.ok(f"job {job_id}: {state_name} ({time.time() - started:.0f} "
                                    f"s); study folder {study_dir} (open it above)"),
                job_log: log, job_timer: gr.Timer(active=not done)}

    @status.shows_errors(job_line)
    def on_stop(state: dict[str, Any]) -> dict[Any, Any]:
        job = state.get("job")
        if job is None:
            return {job_line: status.ok("no job was launched from this page")}
        jobs.stop_job(job[0], dashboard_url)
        return {job_line: status.ok(f"job {job[0]}: stop requested (the sweep exports what "
                                    "finished; resume it later)")}

    def on_refresh() -> Any:
        return gr.Dropdown(choices=studies(places, committed) + [str(p) for p in committed])

    shown = [line, table, gallery, progress, trials, watch]
    open_.click(on_open, [session, chosen], shown)
    watch.tick(on_watch, [session], [progress, trials, watch])
    refresh.click(on_refresh, None, [chosen])
    job_outputs = [job_line, job_log, job_timer]
    launch.click(on_launch, [session, space, name, resume, overrides],
                 [*job_outputs, remembered])
    page.load(on_load, [session, remembered], [*job_outputs, remembered])
    job_timer.tick(on_job_tick, [session], job_outputs)
    stop.click(on_stop, [session], job_outputs)
