"""The ``lt-ray`` command line. Thin: parse, validate, call the library.

Every bad input ends in one ``error: ...`` line on stderr and exit code 2, before anything is
written. Heavy modules (torch, ray, matplotlib) are imported inside the commands.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lt_ray import __version__
from lt_ray.errors import LTRayError, one_line

USER_ERROR = 2


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn LTRayError into one ``error: ...`` line and exit code 2.

    The exit happens after the exception is dropped: its traceback holds the frames of the
    failed call, and native objects they hold (an Arrow table) destroyed during interpreter
    shutdown, after torch's threads, aborted the process now and then (exit 134)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LTRayError as exc:
            message = one_line(str(exc))
        gc.collect()  # the failed call's frames and what they held, freed before the exit
        click.echo(f"error: {message}", err=True)
        sys.exit(USER_ERROR)

    return wrapper


def same_command(ctx: click.Context, flag: str) -> str:
    """The command line of ``ctx`` as the user gave it (options left at their defaults left
    out), with ``flag`` added: what to run to go on."""
    words = ["lt-ray", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if isinstance(param, click.Argument):
            words += [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
        elif value is None or value is False or value == () or value == param.default:
            continue
        elif isinstance(param, click.Option) and param.is_flag:
            words.append(param.opts[0])
        else:
            for item in value if isinstance(value, tuple) else (value,):
                words += [param.opts[0], str(item)]
    return shlex.join(words if flag in words else [*words, flag])


class EchoHandler(logging.Handler):
    """Library log records as plain lines through click (so CliRunner and pipes see them)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record))


def setup_logging() -> None:
    """lt-ray's log records as plain lines through click. Its loggers are enabled again: a
    library's ``logging.config.dictConfig`` (disable_existing_loggers) may have silenced
    them."""
    for name, other in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("lt_ray") and isinstance(other, logging.Logger):
            other.disabled = False
    logger = logging.getLogger("lt_ray")
    logger.disabled = False
    for handler in [h for h in logger.handlers if isinstance(h, EchoHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(EchoHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


class OneLineErrors(click.Group):
    """The ``lt-ray`` group: click's usage errors (a missing option, ``--top-k many``) are one
    ``error:`` line on stderr and exit code 2, like every other bad input."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # `lt-ray` alone: its help
            click.echo(exc.format_message())
            sys.exit(USER_ERROR)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "lt-ray"
            click.echo(f"error: {one_line(exc.format_message())} (see {command} --help)",
                       err=True)
            sys.exit(USER_ERROR)
        except click.ClickException as exc:
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        gc.collect()  # native objects (Arrow tables) freed before interpreter shutdown
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lt-ray")
def main() -> None:
    """lt-ray: long-tailed recognition studies (CIFAR-10/100-LT) on Ray Tune."""


def load_config(config: str | None, method: str | None, overrides: tuple[str, ...]) -> Any:
    """defaults < YAML file < --method < --set, validated."""
    from lt_ray.config import ExperimentConfig, load_yaml, parse_override

    cfg = ExperimentConfig.from_dict(load_yaml(config) if config else {})
    changes: dict[str, Any] = {}
    if method is not None:
        changes["method.name"] = method
    changes.update(parse_override(text) for text in overrides)
    return cfg.replace(changes) if changes else cfg


def clear_out_dir(out: Path) -> None:
    from lt_ray.experiment import run_files

    for path in run_files(out):
        path.unlink(missing_ok=True)


def same_run_config(path: Path, resolved: Any) -> bool:
    """Whether the run config saved at ``path`` resolves to the config of ``resolved``."""
    import yaml

    from lt_ray.config import ExperimentConfig, yaml_load
    from lt_ray.resolution import resolve

    try:
        saved = resolve(ExperimentConfig.from_dict(yaml_load(path.read_text())))
    except (LTRayError, OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return saved.config == resolved.config


def check_out_dir(out: Path, resolved: Any, *, overwrite: bool, resume: bool) -> None:
    """Refuse to mix two runs in one folder unless asked to (writes nothing)."""
    from lt_ray.experiment import CONFIG_FILE, run_files

    outputs = run_files(out)
    if out.exists() and not out.is_dir():
        raise LTRayError(f"--out {out} is a file; give a folder")
    if not any(p.exists() for p in outputs):
        others = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        if others and not overwrite:
            raise LTRayError(
                f"--out {out} is not empty ({len(others)} entries, e.g. {others[0]!r}) and "
                "holds no run; give a new or empty folder, or --overwrite to write the run "
                "among them"
            )
        return
    if resume:
        if outputs[2].exists() and not same_run_config(out / CONFIG_FILE, resolved):
            raise LTRayError(
                f"--resume: {out / CONFIG_FILE} holds a different config; resume with the same "
                "--config/--set values, or use a new --out"
            )
        if outputs[1].is_file():
            from lt_ray.checkpoint import load_resumable

            load_resumable(outputs[1])  # an unreadable checkpoint: refused before the data
        return
    if not overwrite:
        raise LTRayError(
            f"--out {out} already holds a run ({', '.join(p.name for p in outputs if p.exists())});"
            " pass --overwrite to replace it, --resume to continue it, or choose another folder"
        )


@main.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Experiment YAML.")
@click.option("--method", help="Method name (see `lt-ray list`); same as --set method.name=.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Dotted override, e.g. --set optim.lr=0.05 (repeatable).")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Dataset folder (default: $LT_RAY_DATA, then the user cache).")
@click.option("--out", required=True, type=click.Path(), help="Folder for the run's results.")
@click.option("--overwrite", is_flag=True, help="Replace a previous run in --out.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--artifacts", help="Folder or URI of the stage artifacts (pretrained: runs; "
              "default: $LT_RAY_ARTIFACTS, then ~/.cache/lt-ray/artifacts).")
@user_errors
def train(config: str | None, method: str | None, overrides: tuple[str, ...],
          data_root: str | None, out: str, overwrite: bool, resume: bool,
          artifacts: str | None) -> None:
    """Train one configuration (no Ray) and write metrics.json, checkpoint.pt, config.yaml.

    A pretrained: section (the GML plug-in) is trained first, once, into the artifacts."""
    from lt_ray import artifacts as A
    from lt_ray.data import build_dataset
    from lt_ray.experiment import run, runtime_device
    from lt_ray.resolution import resolve
    from lt_ray.storage import check_location, is_uri

    setup_logging()
    if is_uri(out):
        raise LTRayError(f"--out {out}: a run is written to a local folder; give a path (a "
                         "study's storage may be a URI: lt-ray sweep --storage)")
    out = check_location(out, "--out")
    if artifacts is not None:
        artifacts = check_location(artifacts, "--artifacts")
    resolved = resolve(load_config(config, method, overrides))
    cfg = resolved.config
    runtime_device(cfg)  # e.g. train.device=cuda on a machine without CUDA
    root = A.resolve_root(artifacts)
    stage = resolved.stage
    if stage is not None and stage.checkpoint is None and A.find(root, stage) is None:
        A.check_writable(root)  # before any training
    out_dir = Path(out).resolve()
    check_out_dir(out_dir, resolved, overwrite=overwrite, resume=resume)
    data = build_dataset(cfg.data, data_root)  # a data error must not cost the previous run
    if overwrite:
        clear_out_dir(out_dir)
    click.echo(
        f"{cfg.method.name} on {data.name}-LT (imb_factor {cfg.data.imb_factor:g}): "
        f"{int(data.class_counts.sum())} train images, {len(data.val)} val, {len(data.test)} test"
    )
    try:
        result = run(resolved, out_dir, data=data, resume=resume, artifacts=root)
    except KeyboardInterrupt:
        again = ["lt-ray", *sys.argv[1:]]
        again += [] if resume else ["--resume"]
        click.echo(f"interrupted: {out_dir}/checkpoint.pt keeps the last finished epoch; "
                   f"continue with: {shlex.join(again)}", err=True)
        sys.exit(130)
    click.echo(summary_table(result.metrics))
    click.echo(f"results in {out_dir}")


def summary_table(metrics: dict[str, Any]) -> str:
    from lt_ray.metrics import EVAL_SPLITS, METRICS

    header = "split     " + "".join(f"{m:>8}" for m in METRICS)
    rows = [header]
    for split in EVAL_SPLITS:
        cells = []
        for m in METRICS:
            v = metrics.get(f"{split}_{m}")
            cells.append(f"{'-':>8}" if v is None or v != v else f"{100 * v:8.2f}")
        rows.append(f"{split:<10}" + "".join(cells))
    return "\n".join(rows) + "\n(% ; many/medium/few: train count > 100 / 20-100 / < 20)"


@main.command()
@click.option("--checkpoint", "checkpoint", required=True, type=click.Path(),
              help="An lt-ray checkpoint.pt (of `lt-ray train` or a Ray trial), or its folder.")
@click.argument("images", nargs=-1, type=click.Path(), metavar="[IMAGE]...")
@click.option("--split", metavar="SPLIT", help="Evaluate the whole split (val, test, "
              "fulltest) of the checkpoint's dataset instead of images.")
@click.option("--top-k", "top_k", type=int, default=5, show_default=True,
              help="Classes listed per image.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Dataset folder for --split (overrides the run's data.root; default: "
              "data.root, $LT_RAY_DATA, then the user cache).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@user_errors
def predict(checkpoint: str, images: tuple[str, ...], split: str | None, top_k: int,
            as_json: bool, data_root: str | None, device: str) -> None:
    """Classify IMAGE files (top-k classes and probabilities) with a trained checkpoint, or
    re-evaluate a whole --split of its dataset (the run's recorded metrics)."""
    if bool(images) == (split is not None):
        raise LTRayError("give either IMAGE files or --split val|test|fulltest (not both)"
                         if images else "give IMAGE files or --split val|test|fulltest")
    if top_k < 1:
        raise LTRayError(f"--top-k must be >= 1, got {top_k}")
    from lt_ray import predict as P
    from lt_ray.engine import resolve_device
    from lt_ray.metrics import EVAL_SPLITS

    if split is not None and split not in EVAL_SPLITS:
        raise LTRayError(f"--split {split!r} is not one of {', '.join(EVAL_SPLITS)}")
    try:
        torch_device = resolve_device(device)
    except LTRayError as exc:
        raise LTRayError(str(exc).replace("train.device=", "--device ")) from None
    trained = P.load_trained(checkpoint, torch_device)
    if split is None:
        predictions = P.predict_images(trained, images, top_k=top_k, data_root=data_root)
        click.echo(json.dumps(P.predictions_json(trained, predictions), indent=1) if as_json
                   else P.format_predictions(trained, predictions))
        return
    metrics, per_class = P.evaluate_split(trained, split, data_root=data_root)
    click.echo(json.dumps(P.metrics_json(trained, split, metrics, per_class), indent=1)
               if as_json else P.format_metrics(trained, split, metrics))


@main.command("list")
def list_cmd() -> None:
    """Registered datasets, models, heads, losses, train rules, samplers and methods."""
    from lt_ray.data import DATASETS, SAMPLERS
    from lt_ray.losses import LOSSES, loss_hparams, loss_traits
    from lt_ray.methods import METHODS
    from lt_ray.models import HEADS, MODELS
    from lt_ray.rules import RULES, rule_hparams

    def show(title: str, names: list[str], describe: Callable[[str], str]) -> None:
        click.echo(f"{title}:")
        for name in names:
            click.echo(f"  {name:<16}{describe(name)}")

    def hp(values: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in values.items()) or "-"

    def loss_line(n: str) -> str:
        traits = loss_traits(n)
        weights = "" if traits.class_weights else ", ignores class weights"
        return f"{hp(loss_hparams(n))}  [head {traits.head}{weights}]"

    def doc(obj: Any) -> str:
        lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        return lines[0] if lines else ""

    show("datasets", DATASETS.names(), lambda n: doc(DATASETS.get(n)))
    show("models", MODELS.names(), lambda n: doc(MODELS.get(n)))
    show("heads", HEADS.names(), lambda n: doc(HEADS.get(n)))
    show("losses (method.loss, method.loss_args)", LOSSES.names(), loss_line)
    show("train rules (method.rule, method.rule_args)", RULES.names(),
         lambda n: hp(rule_hparams(n)))
    show("samplers (train.sampler)", SAMPLERS.names(), lambda n: doc(SAMPLERS.get(n)))

    def recipe(n: str) -> str:
        import dataclasses

        spec = METHODS.get(n)
        recipe = spec.recipe
        parts = [f"loss={recipe.loss}, rule={recipe.rule}, head={recipe.head}" if recipe
                 else "own loss and heads"]
        stage = spec.defaults.get("pretrained", {}).get("method", {}).get("name")
        if stage or spec.needs_base:
            parts.append(f"stage 1: {stage or 'pretrained: (any)'}")
        fields = dataclasses.fields(spec.args)
        if fields:
            parts.append("method.args: " + hp({f.name: getattr(spec.args(), f.name)
                                               for f in fields}))
        parts = "; ".join(parts)
        return f"{parts}  {spec.doc}".strip()

    show("methods (method.name)", METHODS.names(), recipe)


@main.command()
@click.argument("space", type=click.Path(dir_okay=False))
@click.option("--storage", default="results", show_default=True,
              help="Folder or URI (s3://bucket/prefix; shared storage on a cluster) that holds "
              "<storage>/<study>/.")
@click.option("--name", help="Study name (default: the YAML's name).")
@click.option("--num-samples", type=click.IntRange(min=1), help="Trials per grid cell.")
@click.option("--address", help="Join a running Ray cluster (default: $RAY_ADDRESS, else a "
              "local Ray).")
@click.option("--resume", is_flag=True, help="Continue the study in <storage>/<study>.")
@click.option("--smoke", is_flag=True, help="2 trials of 1 epoch in the first grid cell.")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; start nothing.")
@click.option("--no-dashboard", is_flag=True, help="Start the local Ray without its dashboard.")
@click.option("--optuna-storage", type=click.Path(dir_okay=False),
              help="Optuna JournalStorage file (for optuna-dashboard).")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Dataset folder (default: $LT_RAY_DATA, then the user cache).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Dotted override of the study's base config, e.g. --set train.epochs=30, "
                   "or of a study section: --set grid.data.imb_factor=[100], "
                   "--set search.num_samples=4, --set repeat.seeds=[1,2] (repeatable; "
                   "not for searched keys).")
@click.option("--verbose", is_flag=True, help="Also show Ray Tune's status tables, Ray's "
              "warnings and the trials' log lines.")
@user_errors
def sweep(space: str, storage: str, name: str | None, num_samples: int | None,
          address: str | None, resume: bool, smoke: bool, dry_run: bool, no_dashboard: bool,
          optuna_storage: str | None, data_root: str | None, overrides: tuple[str, ...],
          verbose: bool) -> None:
    """Run the study SPACE (a YAML in search_spaces/) on Ray Tune.

    --set KEY=VALUE changes the study's base config (or its grid/search/repeat/resources/
    scheduler sections) before it is validated.
    """
    from dataclasses import replace

    from lt_ray.config import parse_override
    from lt_ray.storage import check_location
    from lt_ray.tune.interrupt import SweepInterrupted
    from lt_ray.tune.parse import check_study_name, load_spec
    from lt_ray.tune.study import describe_plan, run_sweep

    setup_logging()
    storage = check_location(storage, "--storage")
    if name is not None:
        check_study_name(name, "--name")
    changes = dict(parse_override(text) for text in overrides)
    spec = load_spec(space, overrides=changes)
    if name is not None:
        spec = replace(spec, name=name)
    if num_samples:
        spec = replace(spec, num_samples=num_samples)
    if smoke:
        spec = spec.shrink_for_smoke()
    if dry_run:
        click.echo(describe_plan(spec, storage, changes))
        return
    try:
        run_sweep(spec, storage=storage, address=address, resume=resume,
                  dashboard=not no_dashboard, optuna_storage=optuna_storage,
                  data_root=data_root, smoke=smoke, verbose=verbose, echo=click.echo)
    except SweepInterrupted as stop:
        done = ("before its trials started" if stop.total is None else
                f"with {stop.finished} of {stop.total} trials ended (exported)")
        click.echo(f"interrupted by {stop.signal_name} {done}; resume with: "
                   f"{same_command(click.get_current_context(), '--resume')}", err=True)
        sys.exit(stop.exit_code)


@main.command("export")
@click.argument("study_dir")
@user_errors
def export_cmd(study_dir: str) -> None:
    """(Re)write STUDY_DIR's (a folder or URI) trials/epochs/per_class Parquet files from its
    Tune results."""
    from lt_ray.tune.export import export_study_dir

    paths, records = export_study_dir(study_dir)
    click.echo(f"{len(records)} trials -> " + ", ".join(str(p) for p in paths.values()))


@main.command()
@click.argument("studies", nargs=-1, required=True, metavar="STUDY_DIR_OR_URI...")
@click.option("--out", help="Report folder or URI (default: <first study>/analysis; required "
              "when the first study is a URI).")
@click.option("--select", metavar="METRIC", help="Validation metric that picks each group's "
              "best trial (default: the study's first objective, else val_hm).")
@click.option("--group-by", metavar="COLS", help="Comma-separated trials.parquet columns "
              "(default: study,cell), e.g. method,imb_factor or cfg.method.name.")
@click.option("--format", "formats", default="md,csv,tex", show_default=True,
              metavar="md,csv,tex", help="Formats of the comparison table.")
@click.option("--layout", type=click.Choice(["paper", "long"]), help="paper: a row per method "
              "as a reader names it (CE, CE + GML, ...), grouped, columns per dataset and "
              "imbalance factor; long: a row per group and output with every metric. Default: "
              "paper when the studies compare methods.")
@click.option("--metrics", metavar="acc,gm,hm,lr", help="Columns of the paper layout "
              "(among acc,gm,hm,lr,many,medium,few; default acc,gm,hm,lr).")
@user_errors
def analyze(studies: tuple[str, ...], out: str | None, select: str | None,
            group_by: str | None, formats: str, layout: str | None,
            metrics: str | None) -> None:
    """Compare the best trials of one or more studies: tables, figures, report.md/.html; or
    report on one run folder (lt-ray train --out): its metrics, curves and per-class recall.

    Reads only the studies' Parquet files and study.json, or the run's metrics.json (no Ray)."""
    from lt_ray.analysis import analyze as run_analysis

    setup_logging()
    report = run_analysis(list(studies), out=out, select=select, group_by=group_by,
                          formats=formats, layout=layout, metrics=metrics)
    if report.markdown:
        click.echo(report.markdown)
    per_class = [f for f in report.figures if "per_class" in f and f.endswith(".png")]
    if per_class:
        click.echo(f"per-class recall: {report.out}/{per_class[0]}")
    what = ("run report" if report.layout == "run" else
            f"{report.layout} table of {len(report.table)} selected group(s) and output(s)")
    click.echo(f"{what}, {len(report.figures) // 2} figure(s) -> {report.out}/report.md, "
               "report.html")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on (0.0.0.0: every interface; anyone who reaches it can "
              "train and read files the server can).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--address", help="Join a running Ray cluster (default: $RAY_ADDRESS, else a "
              "local Ray).")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Dataset folder (default: $LT_RAY_DATA, then the user cache).")
@click.option("--runs", default="runs", show_default=True,
              help="Folder of the Train tab's run folders (shared storage on a cluster).")
@click.option("--storage", default="results", show_default=True,
              help="Folder or URI of the studies (as lt-ray sweep --storage).")
@click.option("--artifacts", help="Folder or URI of the stage artifacts (default: "
              "$LT_RAY_ARTIFACTS, then ~/.cache/lt-ray/artifacts).")
@click.option("--no-dashboard", is_flag=True, help="Start the local Ray without its dashboard "
              "(then studies cannot be launched as Ray jobs).")
@user_errors
def ui(host: str, port: int, address: str | None, data_root: str | None, runs: str,
       storage: str, artifacts: str | None, no_dashboard: bool) -> None:
    """Serve the web page: Train, Inference, Compare and Studies tabs (needs the ui extra:
    pip install -e '.[ui]')."""
    import importlib.util

    from lt_ray.storage import check_location

    if importlib.util.find_spec("gradio") is None:
        raise LTRayError("lt-ray ui needs the ui extra: pip install -e '.[ui]' (Gradio)")
    storage = check_location(storage, "--storage")
    if artifacts is not None:
        artifacts = check_location(artifacts, "--artifacts")
    from lt_ray.ui.app import serve

    setup_logging()
    serve(host=host, port=port, address=address, data_root=data_root, runs=runs,
          study_storage=storage, artifact_root=artifacts, dashboard=not no_dashboard,
          echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
