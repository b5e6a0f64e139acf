"""``lt-ray ui`` in a real browser: Playwright drives Debian's chromium (``executable_path``, no
browser download) through the four tabs of a server started by the test (its own local Ray), on
synthetic data: a 2-epoch train and its curve points, a stop, two users' pages, an uploaded
PNG's top-5 and a bad image's error line, a GML re-train's bar chart and its ensemble re-weighed,
the committed study's table. Screenshots of each tab land in the test's tmp folder and, when
$LT_RAY_UI_SCREENSHOTS is set, there (the README's come from `docs/ui`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from lt_ray.cli import main  # noqa: E402
from procutil import free_port, kill_session  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(300),
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")]
REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "analysis" / "cpu30" / "studies"
SYNTHETIC = {"data.synthetic.num_classes": 6, "data.synthetic.n_max": 60,
             "data.synthetic.image_size": 8, "data.synthetic.test_per_class": 16,
             "train.precision": "fp32", "train.batch_size": 32}
WAIT_MS = 60_000


def sets(extra: dict) -> list[str]:
    out = []
    for key, value in {"data.dataset": "synthetic", "data.imb_factor": 10, **SYNTHETIC,
                       **extra}.items():
        out += ["--set", f"{key}={value}"]
    return out


def _read_until(proc: subprocess.Popen, needle: str, timeout_s: float) -> str:
    """The first stdout line of ``proc`` holding ``needle`` (the rest is drained); what it
    printed is in the error when the line does not come."""
    lines: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if needle in line:
                seen.set()

    threading.Thread(target=pump, daemon=True).start()
    if not seen.wait(timeout_s):
        tail = "\n".join(lines[-40:])
        raise AssertionError(f"lt-ray ui printed no {needle!r} in {timeout_s} s (exit code "
                             f"{proc.poll()}); its output:\n{tail}")
    return next(line for line in lines if needle in line)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    runs = root / "runs"
    cli = CliRunner()
    res = cli.invoke(main, ["train", "--method", "ce", *sets({"train.epochs": 8,
                                                              "optim.lr": 0.05}),
                            "--out", str(runs / "base"), "--artifacts", str(root / "art")])
    assert res.exit_code == 0, res.output
    res = cli.invoke(main, ["train", "--method", "gml", *sets({
        "train.epochs": 2, "method.args.ensemble": "prob",
        "pretrained.checkpoint": str(runs / "base" / "checkpoint.pt")}), "--out", str(runs / "gml"),
        "--artifacts", str(root / "art")])
    assert res.exit_code == 0, res.output
    port = free_port()
    env = {**os.environ, "LT_RAY_TEMP_DIR": f"/tmp/ltu{os.getpid()}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lt_ray.cli", "ui", "--port", str(port), "--runs", str(runs),
         "--storage", str(root / "results"), "--artifacts", str(root / "art")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        line = _read_until(proc, "lt-ray ui: ", 120)
        assert line.startswith(f"lt-ray ui: http://127.0.0.1:{port}/"), line
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", runs=runs, root=root, proc=proc)
    finally:
        proc.send_signal(signal.SIGINT)  # the page stops the runs it started, then Ray
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            pass
        kill_session(proc.pid)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1500})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    tab.goto(server.url)
    tab.wait_for_selector("#train-start")
    yield tab
    context.close()


def shot(page, name: str, tmp_path: Path) -> None:
    """A full-page screenshot into the test's folder and $LT_RAY_UI_SCREENSHOTS."""
    for folder in filter(None, [tmp_path, os.environ.get("LT_RAY_UI_SCREENSHOTS")]):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def choose(page, elem_id: str, value: str) -> None:
    """Pick ``value`` in a Gradio dropdown: its option when listed, else typed (a path)."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    option = page.get_by_role("option", name=value, exact=True)
    try:
        option.wait_for(timeout=2_000)
    except sync_api.TimeoutError:
        box.press("Enter")
    else:
        option.click()
    page.locator(f"#{elem_id}").get_by_text(value).or_(box).first.wait_for()


def fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def train_form(page, name: str, epochs: int, extra: dict) -> None:
    choose(page, "train-dataset", "synthetic")
    fill(page, "train-imb-factor", "10")
    fill(page, "train-epochs", str(epochs))
    fill(page, "train-extra", "\n".join(f"{k}={v}" for k, v in {**SYNTHETIC, **extra}.items()))
    fill(page, "train-name", name)


def status_line(page, elem_id: str) -> str:
    return page.inner_text(f"#{elem_id} .lt-status")


def wait_status(page, elem_id: str, needle: str, *, stop_on_error: bool = True) -> str:
    """The status line of ``elem_id`` once it holds ``needle``; an error line ends the wait
    (unless an earlier error is still shown)."""
    error = f", #{elem_id} .lt-error" if stop_on_error else ""
    page.wait_for_selector(f"#{elem_id} .lt-status:has-text({needle!r}){error}")
    text = status_line(page, elem_id)
    assert needle in text, text
    return text


def table_rows(page, elem_id: str) -> int:
    """Data rows of a Gradio table (its grid counts the header row too)."""
    return int(page.locator(f"#{elem_id} [role=grid]").get_attribute("aria-rowcount")) - 1


def test_train_draws_each_epochs_points_and_shows_its_run_folder(page, server, tmp_path):
    train_form(page, "two-epochs", 2, {})
    page.click("#train-start")
    wait_status(page, "train-status", "finished")
    out = server.runs / "two-epochs"
    assert f"results in {out}" in status_line(page, "train-status")
    assert "lt-ray train --method ce --set data.dataset=synthetic" in page.input_value(
        "#train-command textarea")
    assert table_rows(page, "train-epochs-table") == 2
    records = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    table = page.inner_text("#train-epochs-table")
    assert f"{100 * records[1]['test_acc']:g}" in table
    for chart in ("train-acc-gm", "train-hm-lr"):  # Vega drew the points (one per epoch)
        page.wait_for_selector(f"#{chart} canvas, #{chart} svg.marks")
        assert page.locator(f"#{chart} .vega-embed").count() == 1
    assert (out / "metrics.json").is_file() and (out / "checkpoint.pt").is_file()
    shot(page, "train", tmp_path)


def test_stop_really_stops_a_reloaded_page_takes_its_run_back_and_another_users_page_sees_none(
        page, browser, server):
    train_form(page, "stopped", 200, {"data.synthetic.n_max": 400})
    page.click("#train-start")
    other = browser.new_context().new_page()
    other.goto(server.url)
    other.click("#train-stop")
    wait_status(other, "train-status", "no run is going")
    page.locator("#train-status .lt-status", has_text=re.compile(r"epoch \d+ done")).wait_for()
    assert table_rows(other, "train-epochs-table") == 0
    other.context.close()
    page.reload()  # the browser kept its run's token: the reloaded page takes the run back
    page.wait_for_selector("#train-start")
    page.locator("#train-status .lt-status", has_text=re.compile(
        r"running \(\d+ s, epoch \d+ done\): run folder .*/stopped$")).wait_for()
    assert "--out " in page.input_value("#train-command textarea")
    page.wait_for_function("Number(document.querySelector('#train-epochs-table [role=grid]')"
                           "?.getAttribute('aria-rowcount')) > 1")  # its epochs, drawn again
    page.click("#train-stop")
    wait_status(page, "train-status", "stopped:")
    status = status_line(page, "train-status")
    out = server.runs / "stopped"
    assert "checkpoint.pt keeps the last finished epoch; continue with: lt-ray train" in status
    assert status.rstrip().endswith("--resume"), status
    assert (out / "checkpoint.pt").is_file() and not (out / "metrics.json").exists()
    done = len((out / "progress.jsonl").read_text().splitlines())
    time.sleep(2)
    assert len((out / "progress.jsonl").read_text().splitlines()) == done < 200


def test_inference_top5_of_an_upload_each_outputs_top5_and_a_bad_images_error(page, server,
                                                                              tmp_path):
    from PIL import Image

    png = tmp_path / "dot.png"
    pixels = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(png)
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    page.get_by_role("tab", name="Inference").click()
    choose(page, "infer-checkpoint", str(server.runs / "gml"))
    page.locator("#infer-upload input[type=file]").set_input_files(str(png))
    page.click("#infer-classify")
    wait_status(page, "infer-status", "dot.png: gml on synthetic")
    assert "output ens of old, new, ens" in status_line(page, "infer-status")
    assert page.locator("#infer-top5").inner_text().count("%") == 5  # the top-5
    header = page.inner_text("#infer-outputs thead")  # rank, then each output's column
    for output in ("old", "new", "ens (shown)"):
        assert output in header
    assert table_rows(page, "infer-outputs") == 5
    expected = subprocess.run(  # the same path as lt-ray predict
        [sys.executable, "-m", "lt_ray.cli", "predict", "--checkpoint", str(server.runs / "gml"),
         str(png), "--json"], capture_output=True, text=True, check=True)
    top1 = json.loads(expected.stdout)[0]["top_k"][0]["class"]
    shown = [line.strip() for line in page.inner_text("#infer-top5").splitlines()]
    assert shown[shown.index("top-5") + 1] == top1  # the label heads the top-5 list
    shot(page, "inference", tmp_path)
    page.click("#infer-upload button[aria-label=Clear]")
    page.locator("#infer-upload input[type=file]").set_input_files(str(bad))
    page.click("#infer-classify")
    page.wait_for_selector("#infer-status .lt-error")
    error = status_line(page, "infer-status")
    assert error.startswith("error: image ") and "broken.png: not a readable image" in error
    assert len(error.strip().splitlines()) == 1
    page.click("#infer-classify-test")  # the server lives on
    wait_status(page, "infer-status", "test image 0 (true class", stop_on_error=False)


def test_compare_re_trains_draws_the_bar_chart_and_re_weighs_the_ensemble(page, server,
                                                                         tmp_path):
    page.get_by_role("tab", name="Compare").click()
    choose(page, "compare-base", str(server.runs / "base"))
    fill(page, "compare-epochs", "10")
    page.click("#compare-run")
    wait_status(page, "compare-status", "re-trained with gml for 10 epochs")
    assert table_rows(page, "compare-table") == 3
    words = page.inner_text("#compare-table [role=grid]").split()
    columns = words[:8]
    assert columns == ["output", "acc", "gm", "hm", "lr", "many", "medium", "few"]
    rows = {row[0]: dict(zip(columns, row, strict=True)) for row in
            (words[8 + 8 * i: 16 + 8 * i] for i in range(3))}
    assert list(rows) == ["old", "new", "ens"] and rows["old"]["many"] == "–"  # no class > 100
    assert float(rows["new"]["few"]) > float(rows["old"]["few"])  # GML lifts the tail
    page.wait_for_selector("#compare-plot img, #compare-plot svg")
    shot(page, "compare", tmp_path)
    t1 = page.locator("#compare-t1 input[type=number]")
    t1.fill("3")
    t1.press("Enter")
    wait_status(page, "compare-status", "ensemble re-computed: t1 3, t2 1")


def test_studies_shows_a_committed_studys_paper_table_figures_and_trials(page, tmp_path):
    page.get_by_role("tab", name="Studies").click()
    choose(page, "study-pick", str(COMMITTED / "cpu30_ce"))  # all 8: 15 s more, same code
    page.click("#study-open")
    wait_status(page, "study-status", "1 study(ies): paper table")
    table = page.inner_text("#study-table")  # README's numbers (analysis/cpu30)
    assert "CE + GML (ensemble)" in table and "69.52 ± 0.11" in table
    assert "20 trials: 20 completed" in status_line(page, "study-progress")
    assert page.locator("#study-figures img").count() >= 4
    shot(page, "studies", tmp_path)
    choose(page, "study-pick", str(tmp_path))
    page.click("#study-open")
    page.wait_for_selector("#study-status .lt-error")
    assert "holds no study" in status_line(page, "study-status")
    page.get_by_text("launch a study as a Ray job").click()
    choose(page, "launch-space", str(REPO / "search_spaces" / "quickstart.yaml"))
    fill(page, "launch-overrides", "train.epoch=2")
    page.click("#launch-start")
    page.wait_for_selector("#launch-status .lt-error")
    assert "train.epoch" in status_line(page, "launch-status")


def test_a_study_file_launched_as_a_ray_job_runs_is_followed_after_a_reload_and_opens(
        page, server, tmp_path):
    base = {"seed": 0, "data": {"dataset": "synthetic", "imb_factor": 10, "synthetic": {
        "num_classes": 4, "n_max": 48, "image_size": 8, "test_per_class": 16}},
        "train": {"epochs": 3, "batch_size": 32, "precision": "fp32"}}
    study_file = tmp_path / "launched.yaml"
    study_file.write_text(yaml.safe_dump({
        "name": "launched", "base": base, "space": {"optim.lr": {"choice": [0.05]}},
        "search": {"metric": "val_acc", "mode": "max", "num_samples": 1, "max_concurrent": 1},
        "resources": {"cpu": 1}}))
    page.get_by_role("tab", name="Studies").click()
    page.get_by_text("launch a study as a Ray job").click()
    choose(page, "launch-space", str(study_file))
    fill(page, "launch-overrides", "train.epochs=1")
    page.click("#launch-start")
    wait_status(page, "launch-status", "submitted")
    page.reload()  # the browser kept the job: the reloaded page follows it again
    page.get_by_role("tab", name="Studies").click()
    page.get_by_text("launch a study as a Ray job").click()
    page.wait_for_selector("#launch-status .lt-status:has-text(': SUCCEEDED'), "
                           "#launch-status .lt-status:has-text(': FAILED')", timeout=150_000)
    study = server.root / "results" / "launched"
    assert ": SUCCEEDED" in status_line(page, "launch-status"), page.inner_text("#launch-log")
    trials = pd.read_parquet(study / "trials.parquet")
    assert list(trials.status) == ["completed"] and list(trials.epochs_completed) == [1]
    choose(page, "study-pick", str(study))
    page.click("#study-open")
    wait_status(page, "study-status", "1 study(ies)")
    assert "1 trials: 1 completed" in status_line(page, "study-progress")
