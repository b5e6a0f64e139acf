"""The page and its server: four tabs over one Ray (started here, or a cluster joined).

Each browser session has its own state (its run, its comparison, its studies, its job), so two
users of one server never see each other's runs mixed up; what they share is what is on disk
(run folders, artifacts, studies). Usage analytics and share links are off; the server binds
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import gradio as gr

import lt_ray
from lt_ray import __version__, artifacts, storage
from lt_ray.errors import LTRayError
from lt_ray.tune.ray_runtime import has_gpus, start_ray, stop_ray
from lt_ray.ui import compare_tab, inference_tab, studies_tab, train_tab
from lt_ray.ui.locations import Places

CSS = """
.lt-status { font-family: ui-monospace, monospace; padding: 4px 8px; border-radius: 4px; }
.lt-ok { background: #eef6ee; }
.lt-error { background: #fdecea; color: #8a1c1c; font-weight: 600; }
"""
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])


def committed_studies() -> tuple[Path, ...]:
    """Folders of committed studies (``analysis/*/studies``) of the working folder or the
    checkout lt-ray runs from."""
    for root in (Path.cwd(), Path(lt_ray.__file__).resolve().parents[1]):
        found = tuple(sorted((root / "analysis").glob("*/studies")))
        if found:
            return found
    return ()


def build_page(places: Places, *, dashboard_url: str | None, gpus: float, local_ray: bool,
               started: list[train_tab.TrainRun]) -> gr.Blocks:
    """The four tabs; ``started`` collects the runs the page starts (to stop them at exit)."""
    with gr.Blocks(analytics_enabled=False, title="lt-ray") as page:
        session = gr.State({})
        # what a browser keeps across reloads; outside the tabs, which mount when first shown
        kept_run = gr.BrowserState(None, storage_key=train_tab.RUN_KEY)
        kept_job = gr.BrowserState(None, storage_key=studies_tab.JOB_KEY)
        gr.Markdown(f"## lt-ray {__version__}: long-tailed recognition on Ray"
                    + (f" · [Ray dashboard]({dashboard_url})" if dashboard_url else ""))
        with gr.Tab("Train", id="train"):
            train_tab.build(places, session, page, kept_run, gpus=gpus, started=started)
        with gr.Tab("Inference", id="inference"):
            inference_tab.build(places)
        with gr.Tab("Compare", id="compare"):
            compare_tab.build(places, session)
        with gr.Tab("Studies", id="studies"):
            studies_tab.build(places, session, page, kept_job, dashboard_url,
                              committed_studies(), local_ray=local_ray)
    return page


def serve(*, host: str, port: int, address: str | None, data_root: str | None, runs: str,
          study_storage: str, artifact_root: str | None, dashboard: bool,
          echo: Callable[[str], None]) -> None:
    """Start or join Ray, serve the page until SIGINT/SIGTERM, then stop what was started."""
    if data_root is not None and not Path(data_root).is_dir():
        raise LTRayError(f"--data-root {data_root}: no such folder")
    runs_dir = Path(runs).expanduser().resolve()
    if runs_dir.exists() and not runs_dir.is_dir():
        raise LTRayError(f"--runs {runs_dir} is a file; give a folder")
    work = Path(tempfile.mkdtemp(prefix="lt-ray-ui-"))
    places = Places(runs=runs_dir, storage=storage.normalize(study_storage),
                    artifacts=artifacts.resolve_root(artifact_root),
                    data_root=str(Path(data_root).resolve()) if data_root else None, work=work)
    started: list[train_tab.TrainRun] = []
    try:
        dashboard_url = start_ray(address, dashboard=dashboard, verbose=False)
        local_ray = not (address or os.environ.get("RAY_ADDRESS"))
        page = build_page(places, dashboard_url=dashboard_url, gpus=1.0 if has_gpus() else 0.0,
                          local_ray=local_ray, started=started)
        try:
            _, url, _ = page.launch(server_name=host, server_port=port, share=False,
                                    prevent_thread_lock=True, quiet=True, ssr_mode=False,
                                    allowed_paths=[str(work)], theme=THEME, css=CSS,
                                    footer_links=[])
        except OSError as exc:
            raise LTRayError(f"cannot serve on {host}:{port}: {exc} (give another --port)") \
                from None
        echo(f"lt-ray ui: {url}" + (f"  (Ray dashboard: {dashboard_url})"
                                    if dashboard_url else ""))
        echo("Ctrl-C stops the page and the runs it started (they keep their last epoch)")
        _wait_for_signal()
        page.close()
        stopped = train_tab.stop_all(started)
        if stopped:
            echo(f"stopped {stopped} run(s): each keeps its checkpoint (lt-ray train --resume)")
    finally:
        stop_ray()
        shutil.rmtree(work, ignore_errors=True)


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
