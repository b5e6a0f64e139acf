"""The ``lt-ray`` command line. Thin: parse, validate, call the library.

Every bad input ends in one ``error: ...`` line on stderr and exit code 2, before anything is
written. Heavy modules (torch, ray, matplotlib) are imported inside the commands.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lt_ray import __version__

USER_ERROR = 2


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn LTRayError into one message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lt_ray.errors import LTRayError

        try:
            return fn(*args, **kwargs)
        except LTRayError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(USER_ERROR)

    return wrapper


class EchoHandler(logging.Handler):
    """Library log records as plain lines through click (so CliRunner and pipes see them)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record))


def setup_logging() -> None:
    logger = logging.getLogger("lt_ray")
    for handler in [h for h in logger.handlers if isinstance(h, EchoHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(EchoHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


def prepare_out_dir(out: Path, cfg: Any, *, overwrite: bool, resume: bool) -> None:
    """Refuse to mix two runs in one folder unless asked to."""
    from lt_ray.errors import LTRayError
    from lt_ray.experiment import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE

    outputs = [out / name for name in (METRICS_FILE, CHECKPOINT_FILE, CONFIG_FILE)]
    if out.exists() and not out.is_dir():
        raise LTRayError(f"--out {out} is a file; give a folder")
    if not any(p.exists() for p in outputs):
        return
    if resume:
        import yaml

        saved = yaml.safe_load((out / CONFIG_FILE).read_text()) if outputs[2].exists() else None
        if saved is not None and saved != cfg.to_dict():
            raise LTRayError(
                f"--resume: {out / CONFIG_FILE} holds a different config; resume with the same "
                "--config/--set values, or use a new --out"
            )
        return
    if not overwrite:
        raise LTRayError(
            f"--out {out} already holds a run ({', '.join(p.name for p in outputs if p.exists())});"
            " pass --overwrite to replace it, --resume to continue it, or choose another folder"
        )
    for p in outputs:
        p.unlink(missing_ok=True)


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
@user_errors
def train(config: str | None, method: str | None, overrides: tuple[str, ...],
          data_root: str | None, out: str, overwrite: bool, resume: bool) -> None:
    """Train one configuration (no Ray) and write metrics.json, checkpoint.pt, config.yaml."""
    from lt_ray.data import build_dataset
    from lt_ray.experiment import run, validate

    setup_logging()
    cfg = load_config(config, method, overrides)
    validate(cfg)
    out_dir = Path(out).resolve()
    prepare_out_dir(out_dir, cfg, overwrite=overwrite, resume=resume)
    data = build_dataset(cfg.data, data_root)
    click.echo(
        f"{cfg.method.name} on {data.name}-LT (imb_factor {cfg.data.imb_factor:g}): "
        f"{int(data.class_counts.sum())} train images, {len(data.val)} val, {len(data.test)} test"
    )
    result = run(cfg, out_dir, data=data, resume=resume)
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


@main.command("list")
def list_cmd() -> None:
    """Registered datasets, models, heads, losses, train rules, samplers and methods."""
    from lt_ray.data import DATASETS, SAMPLERS
    from lt_ray.losses import LOSSES, loss_hparams
    from lt_ray.methods import METHODS
    from lt_ray.models import HEADS, MODELS
    from lt_ray.rules import RULES, rule_hparams

    def show(title: str, names: list[str], describe: Callable[[str], str]) -> None:
        click.echo(f"{title}:")
        for name in names:
            click.echo(f"  {name:<16}{describe(name)}")

    def hp(values: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in values.items()) or "-"

    show("datasets", DATASETS.names(), lambda n: "")
    show("models", MODELS.names(), lambda n: "")
    show("heads", HEADS.names(), lambda n: "")
    show("losses (method.loss, method.loss_args)", LOSSES.names(),
         lambda n: hp(loss_hparams(n)))
    show("train rules (method.rule, method.rule_args)", RULES.names(),
         lambda n: hp(rule_hparams(n)))
    show("samplers (train.sampler)", SAMPLERS.names(), lambda n: "")

    def recipe(n: str) -> str:
        meta = METHODS.meta(n)
        parts = ", ".join(f"{k}={v}" for k, v in meta.items())
        doc = (METHODS.get(n).__doc__ or "").strip().splitlines()[0:1]
        return f"{parts}  {doc[0] if doc else ''}".strip()

    show("methods (method.name)", METHODS.names(), recipe)


if __name__ == "__main__":  # pragma: no cover
    main()
