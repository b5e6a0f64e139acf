"""The Inference tab: an uploaded image, or a test image of the checkpoint's own dataset, through
the same code as ``lt-ray predict``: top-5 classes, and for a method with several outputs (GML:
old, new, ensemble) each output's top-5."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from lt_ray import predict as P
from lt_ray.checkpoint import checkpoint_file
from lt_ray.engine import resolve_device
from lt_ray.errors import LTRayError
from lt_ray.ui import status
from lt_ray.ui.locations import Places, checkpoints

TOP_K = 5
CACHED = 4  # restored checkpoints kept in memory (shared by sessions: read-only)


@lru_cache(maxsize=CACHED)
def _trained(path: str, mtime: float) -> P.Trained:
    return P.load_trained(path, resolve_device("auto"))


def trained(path: str | None) -> P.Trained:
    """The restored method of the picked checkpoint (cached while its file is unchanged)."""
    if not path or not str(path).strip():
        raise LTRayError("pick a checkpoint (a run folder, an artifact or a checkpoint.pt)")
    file = checkpoint_file(str(path).strip())
    if not file.is_file():
        raise LTRayError(f"checkpoint {file}: no such file; pick a run folder or artifact")
    return _trained(str(file), file.stat().st_mtime)


@lru_cache(maxsize=2)
def _test_split(path: str, mtime: float, data_root: str | None) -> tuple[Any, Any]:
    item = _trained(path, mtime)
    data = P.build_data(item.cfg, data_root)
    return data.test.x, data.test.y


def test_image(item: P.Trained, index: int, data_root: str | None) -> tuple[Any, int]:
    """uint8 [1, 3, H, W] and the label of test image ``index`` of the checkpoint's dataset."""
    x, y = _test_split(str(item.path), item.path.stat().st_mtime, data_root)
    if not 0 <= index < len(y):
        raise LTRayError(f"test image index {index} is outside 0..{len(y) - 1}")
    return x[index:index + 1], int(y[index])


def top5_outputs(item: P.Trained, prediction: P.ImagePrediction) -> tuple[dict[str, float],
                                                                          pd.DataFrame]:
    """The primary top-5 as label -> probability and a table of every output's top-5 (%)."""
    label = {r.name: r.probability for r in prediction.top_k}
    columns = {"rank": list(range(1, len(prediction.top_k) + 1))}
    outputs = prediction.by_output or {item.primary_output or "model": prediction.top_k}
    for name, ranked in outputs.items():
        mark = " (shown)" if name == item.primary_output and prediction.by_output else ""
        columns[f"{name}{mark}"] = [f"{r.name} {100 * r.probability:.1f}%" for r in ranked]
    return label, pd.DataFrame(columns)


def build(places: Places) -> None:
    """The tab's components and events (inside a ``gr.Tab``)."""
    with gr.Row():
        ckpt = gr.Dropdown([(label, path) for label, path in checkpoints(places)],
                           allow_custom_value=True, label="checkpoint (any method's; GML "
                           "ensembles included)", elem_id="infer-checkpoint", scale=4)
        refresh = gr.Button("↻ list", scale=0)
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="an image (PNG, JPEG, ...)", type="filepath",
                             elem_id="infer-upload")
            classify = gr.Button("Classify the image", variant="primary",
                                 elem_id="infer-classify")
        with gr.Column():
            index = gr.Number(0, precision=0, label="or a test image of its dataset: index",
                              elem_id="infer-index")
            classify_test = gr.Button("Classify test image", elem_id="infer-classify-test")
            preview = gr.Image(label="test image", height=128, interactive=False)
    line = gr.HTML(elem_id="infer-status")
    with gr.Row():
        top = gr.Label(num_top_classes=TOP_K, label="top-5", elem_id="infer-top5")
        by_output = gr.Dataframe(label="top-5 of each output", interactive=False,
                                 elem_id="infer-outputs")

    def shown(item: P.Trained, prediction: P.ImagePrediction, what: str) -> dict[Any, Any]:
        label, table = top5_outputs(item, prediction)
        outputs = (f"; output {item.primary_output} of {', '.join(item.outputs)}"
                   if item.outputs else "")
        return {top: label, by_output: table, line: status.ok(
            f"{what}: {item.cfg.method.name} on {item.cfg.data.dataset}{outputs}")}

    @status.shows_errors(line)
    def on_image(path: str | None, file: str | None) -> dict[Any, Any]:
        item = trained(path)
        if not file:
            raise LTRayError("upload an image first (or classify a test image by index)")
        prediction = P.predict_images(item, [file], top_k=TOP_K, data_root=places.data_root)[0]
        return shown(item, prediction, Path(file).name)

    @status.shows_errors(line)
    def on_test(path: str | None, number: float | None) -> dict[Any, Any]:
        item = trained(path)
        if number is None:
            raise LTRayError("give a test image index")
        pixels, label = test_image(item, int(number), places.data_root)
        spec = P.input_spec(item.cfg, places.data_root)
        prediction = P.predict_pixels(item, pixels, [f"test[{int(number)}]"], top_k=TOP_K,
                                      spec=spec)[0]
        result = shown(item, prediction, f"test image {int(number)} (true class "
                                         f"{item.class_names[label]})")
        result[preview] = pixels[0].permute(1, 2, 0).numpy()
        return result

    def on_refresh() -> Any:
        return gr.Dropdown(choices=[(label, path) for label, path in checkpoints(places)])

    outputs = [top, by_output, line, preview]
    classify.click(on_image, [ckpt, upload], outputs)
    classify_test.click(on_test, [ckpt, index], outputs)
    refresh.click(on_refresh, None, [ckpt])
