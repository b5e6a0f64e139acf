"""The Compare tab: re-train a base's classifier (GML by default) on its cached features, then
the per-class recall of the old head, the new one and their ensemble, head to tail, as
``lt-ray analyze`` draws it, with their Acc/GM/HM/LR. Moving t1/t2 re-computes the ensemble
from the kept logits, without training again."""

from __future__ import annotations

from typing import Any

import gradio as gr

from lt_ray import retrain as R
from lt_ray.analysis.plots import per_class_figure
from lt_ray.errors import LTRayError
from lt_ray.losses import LOSSES
from lt_ray.ui import status
from lt_ray.ui.locations import Places, checkpoints

LABELS = {"old": "old (the base's head)", "new": "new (re-trained head)",
          "ens": "ensemble (t1 new, t2 old)"}


def scores(run: R.Retrained, t1: float, t2: float, mode: str) -> tuple[Any, Any]:
    """The metrics table and the per-class figure of ``run`` at ``t1``/``t2``."""
    table, recall = R.ensemble_scores(run, t1, t2, mode)
    cfg = run.cfg
    title = (f"{run.base} + {cfg.method.loss} re-train ({cfg.train.epochs} epochs) on "
             f"{cfg.data.dataset} IF {cfg.data.imb_factor:g}: test recall, t1 {t1:g}, "
             f"t2 {t2:g} ({mode})")
    shown = table.round(2).astype(object).where(table.notna(), "–")  # an empty shot group
    return shown, per_class_figure(recall, title, LABELS)


def build(places: Places, session: gr.State) -> None:
    """The tab's components and events (inside a ``gr.Tab``)."""
    with gr.Row():
        base = gr.Dropdown([(label, path) for label, path in checkpoints(places)],
                           allow_custom_value=True, label="base (run folder or artifact)",
                           elem_id="compare-base", scale=4)
        refresh = gr.Button("↻ list", scale=0)
    with gr.Row():
        loss = gr.Dropdown(LOSSES.names(), value="gml", label="loss for re-training",
                           elem_id="compare-loss")
        epochs = gr.Number(30, precision=0, label="epochs", elem_id="compare-epochs")
        mode = gr.Radio(["prob", "logit"], value="prob", label="ensemble")
        t1 = gr.Slider(0.1, 5.0, value=1.0, step=0.05, label="t1 (new head)",
                       elem_id="compare-t1")
        t2 = gr.Slider(0.1, 5.0, value=1.0, step=0.05, label="t2 (old head)",
                       elem_id="compare-t2")
        go = gr.Button("Re-train", variant="primary", elem_id="compare-run")
    line = gr.HTML(elem_id="compare-status")
    table = gr.Dataframe(label="test metrics (%)", interactive=False, elem_id="compare-table")
    figure = gr.Plot(label="per-class test recall, head to tail", elem_id="compare-plot")

    @status.shows_errors(line)
    def on_retrain(state: dict[str, Any], path: str | None, loss_name: str, n: float | None,
                   how: str, t_new: float, t_old: float) -> dict[Any, Any]:
        if not path or not str(path).strip():
            raise LTRayError("pick a base (a run folder or an artifact)")
        if n is None or int(n) < 1:
            raise LTRayError(f"epochs must be >= 1, got {n}")
        cfg = R.compare_config(str(path).strip(), loss=loss_name, epochs=int(n),
                               ensemble_mode=how, t1=t_new, t2=t_old)
        run = R.retrain(cfg, data_root=places.data_root, artifacts=places.artifacts)
        state["compare"] = run
        metrics, fig = scores(run, t_new, t_old, how)
        return {table: metrics, figure: fig, line: status.ok(
            f"re-trained with {loss_name} for {int(n)} epochs on the cached features of "
            f"{path}; move t1/t2 to re-weigh the ensemble")}

    @status.shows_errors(line)
    def on_temperature(state: dict[str, Any], how: str, t_new: float,
                       t_old: float) -> dict[Any, Any]:
        run: R.Retrained | None = state.get("compare")
        if run is None:
            return {}
        metrics, fig = scores(run, t_new, t_old, how)
        return {table: metrics, figure: fig,
                line: status.ok(f"ensemble re-computed: t1 {t_new:g}, t2 {t_old:g} ({how})")}

    def on_refresh() -> Any:
        return gr.Dropdown(choices=[(label, path) for label, path in checkpoints(places)])

    outputs = [table, figure, line]
    go.click(on_retrain, [session, base, loss, epochs, mode, t1, t2], outputs)
    for control in (t1, t2, mode):  # the latest position wins; nothing is trained again
        control.change(on_temperature, [session, mode, t1, t2], outputs,
                       trigger_mode="always_last")
    refresh.click(on_refresh, None, [base])
