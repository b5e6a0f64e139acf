"""Golden files: what every method computes on tiny synthetic data, and the package's interfaces.

``tests/golden/methods.json`` holds, for each case of :data:`CASES`, what ``lt-ray train``
wrote to ``metrics.json`` (summary metrics without timings, per-class recalls, train class
counts, the per-epoch history without timings, and the resolved config); every float is kept
to the last digit. ``tests/golden/interfaces.json`` holds the Arrow schemas of
:mod:`lt_ray.results.schema` and the parameters of every ``lt-ray`` command.
``tests/test_golden.py`` re-runs the cases and compares both files exactly.

Regenerate them ONLY for an intended change of behaviour or interface, and say so (with the
reason) in the commit that changes them::

    python tests/golden_runs.py --write      # from the repository root, in the project's venv

A failing golden test after a refactor means the refactor changed results: find out why
before regenerating. The numbers are those of this machine's CPU with one torch thread and the
venv's torch; another torch version or CPU may legitimately differ in the last digits (then
regenerate on purpose, stating it in the commit). Every case pins ``train.device=cpu`` and
``train.precision=fp32`` for each of its stages, so a GPU or a bf16-capable CPU does not change
the path taken.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GOLDEN_DIR = HERE / "golden"
METHODS_FILE = GOLDEN_DIR / "methods.json"
INTERFACES_FILE = GOLDEN_DIR / "interfaces.json"

# The TINY config of conftest.py, frozen here (a change of conftest must not move the golden),
# with more and cleaner images (n_max 100, noise 0.2: two epochs then predict more than one
# class, so evaluation and the GML ensemble are pinned too), plus train.device=cpu: device
# "auto" would take a GPU where there is one.
BASE: tuple[str, ...] = (
    "seed=0",
    "data.dataset=synthetic",
    "data.imb_factor=10",
    "data.synthetic.num_classes=4",
    "data.synthetic.n_max=100",
    "data.synthetic.noise=0.2",
    "data.synthetic.image_size=8",
    "data.synthetic.test_per_class=16",
    "model.arch=resnet20",
    "train.epochs=2",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.precision=fp32",
    "train.device=cpu",
)


def stage1(prefix: str = "pretrained.") -> list[str]:
    """A stage-1 run (the ``pretrained:`` section at ``prefix``): 2 epochs of batch 16, fp32 on
    the CPU (a stage inherits only data, seed and model.arch; precision ``auto`` would be bf16
    on a CPU that has it)."""
    return [f"{prefix}train.epochs=2", f"{prefix}train.batch_size=16",
            f"{prefix}train.precision=fp32", f"{prefix}train.device=cpu"]


def _cases() -> list[tuple[str, list[str]]]:
    ce_base = ["pretrained.method.name=ce", *stage1()]
    cases = [
        ("ce", []),
        ("bsce", []),
        ("focal", []),
        ("ldam_drw", []),
        ("lade", []),
        ("feabal", []),
        ("reweight_ce", []),
        ("resample_ce", []),
        ("gml", ce_base),
        ("mislas_stage1", []),
        ("mislas", stage1()),
        ("ride", []),
        ("ride_distill", stage1()),
        ("ride_ea", stage1()),
        ("paco", ["method.args.queue_size=64"]),
    ]
    out = [(name, [f"method.name={name}", *extra]) for name, extra in cases]
    out += [
        ("gml_ensemble_prob", ["method.name=gml", "method.args.ensemble=prob",
                               "method.args.t1=2", "method.args.t2=0.5", *ce_base]),
        ("gml_on_ldam_drw", ["method.name=gml", "pretrained.method.name=ldam_drw", *stage1()]),
        ("gml_freeze_all_on_gml", ["method.name=gml", "method.args.freeze=all",
                                   "method.args.ensemble=prob", "pretrained.method.name=gml",
                                   "pretrained.pretrained.method.name=ce", *stage1(),
                                   *stage1("pretrained.pretrained.")]),
        ("gml_loss_bsce", ["method.name=gml", "method.loss=bsce", *ce_base]),
        ("mislas_if50", ["method.name=mislas", "data.imb_factor=50", *stage1()]),
    ]
    return [(case_id, [*BASE, *sets]) for case_id, sets in out]


#: (case id, ``--set`` values); every registered method once, plus GML/MiSLAS variants.
CASES: list[tuple[str, list[str]]] = _cases()
CASE_SETS: dict[str, list[str]] = dict(CASES)

DROPPED = ("time", "images_per_s", "device", "version")  # timing and environment keys


def _kept(key: str) -> bool:
    return not any(part in key for part in DROPPED)


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


class single_thread:
    """``torch.set_num_threads(1)`` inside, the previous count restored after."""

    def __enter__(self) -> None:
        import torch

        self.previous = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.previous)


def train_args(sets: list[str], out: Path, artifacts: Path) -> list[str]:
    args = ["train"]
    for text in sets:
        args += ["--set", text]
    return [*args, "--out", str(out), "--artifacts", str(artifacts)]


def run_case(case_id: str, sets: list[str], out: Path, artifacts: Path) -> dict[str, Any]:
    """Train one case through the real CLI (in-process, one torch thread) and return what the
    golden keeps of its ``metrics.json``."""
    from click.testing import CliRunner

    from lt_ray.cli import main

    with single_thread():
        result = CliRunner().invoke(main, train_args(sets, out, artifacts))
    if result.exit_code != 0:
        trace = ("".join(traceback.format_exception(*result.exc_info))
                 if result.exc_info and result.exception is not None
                 and not isinstance(result.exception, SystemExit) else "")
        raise RuntimeError(f"golden case {case_id}: lt-ray train exited {result.exit_code}\n"
                           f"{result.output}\n{trace}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "sets": list(sets),
        "weights_sha256": weights_digest(out / "checkpoint.pt"),
        "summary": {k: v for k, v in metrics.items() if _scalar(v) and _kept(k)},
        "per_class_recall": metrics["per_class_recall"],
        "train_class_counts": metrics["train_class_counts"],
        "history": [{k: v for k, v in record.items() if _kept(k)}
                    for record in metrics["history"]],
        "config": metrics["config"],
    }


def weights_digest(path: Path) -> str:
    """SHA-256 of the trained state dict in checkpoint ``path``: every tensor's name, dtype,
    shape and bytes, in name order (the trained weights to the last bit)."""
    import hashlib

    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_cases(cases: list[tuple[str, list[str]]] | None = None,
              workdir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every case, each in its own out folder, all sharing one artifacts folder (a stage 1
    is trained once), under ``workdir`` (default: a temporary folder)."""
    cases = CASES if cases is None else cases
    with tempfile.TemporaryDirectory(prefix="lt-ray-golden-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        return {case_id: run_case(case_id, sets, root / "runs" / case_id, root / "artifacts")
                for case_id, sets in cases}


# --- interfaces --------------------------------------------------------------------------------


def arrow_schemas() -> dict[str, Any]:
    """Every ``pyarrow.Schema`` defined in :mod:`lt_ray.results.schema`, by attribute name:
    its fields in order (name, type, nullable) and its metadata."""
    import pyarrow as pa

    from lt_ray.results import schema

    out = {}
    for name, value in sorted(vars(schema).items()):
        if isinstance(value, pa.Schema):
            out[name] = {
                "fields": [{"name": f.name, "type": str(f.type), "nullable": f.nullable}
                           for f in value],
                "metadata": {k.decode(): v.decode() for k, v in (value.metadata or {}).items()},
            }
    return out


def _walk_commands(command: Any, ctx: Any) -> Iterator[tuple[str, Any, Any]]:
    import click

    yield ctx.command_path, command, ctx
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            sub = command.commands[name]
            sub_ctx = click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)
            yield from _walk_commands(sub, sub_ctx)


def cli_interface() -> dict[str, Any]:
    """Every command of ``lt-ray`` (groups recursively) by command path: its parameters by name
    (help and version options included; a mapping, so the JSON is sorted and a difference is
    named ``cli.lt-ray train.params.out.required``)."""
    import click

    from lt_ray.cli import main

    out = {}
    root = click.Context(main, info_name="lt-ray", **main.context_settings)  # as make_context
    for path, command, ctx in _walk_commands(main, root):
        params: dict[str, Any] = {}
        for p in command.get_params(ctx):
            assert p.name not in params, f"{path}: two parameters named {p.name}"
            params[str(p.name)] = {
                "kind": type(p).__name__,
                "opts": list(p.opts),
                "secondary_opts": list(p.secondary_opts),
                "type": p.type.name,
                "required": p.required,
                "default": repr(p.get_default(ctx, call=False)),  # a flag's False, not UNSET
                "multiple": p.multiple,
                "is_flag": bool(getattr(p, "is_flag", False)),
                "nargs": p.nargs,
            }
        out[path] = {"group": isinstance(command, click.Group), "params": params}
    return out


def interfaces() -> dict[str, Any]:
    return {"arrow_schemas": arrow_schemas(), "cli": cli_interface()}


# --- files and comparison ---------------------------------------------------------------------


def dumps(payload: Any) -> str:
    """Stable JSON text: sorted keys, indented, exact floats (``repr``), a final newline."""
    return json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n"


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def diff(expected: Any, actual: Any, path: str = "", *, limit: int = 10) -> list[str]:
    """The first ``limit`` differences between two JSON values as ``dotted.path: expected ->
    actual`` lines. Exact: floats with ``==`` (NaN equals NaN), and a type change (``1`` vs
    ``1.0``, ``0`` vs ``False``) is a difference."""
    out: list[str] = []
    _diff(expected, actual, path, out, limit)
    return out


def _diff(a: Any, b: Any, path: str, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    where = path or "<root>"
    if type(a) is not type(b):
        out.append(f"{where}: {a!r} ({type(a).__name__}) -> {b!r} ({type(b).__name__})")
    elif isinstance(a, dict):
        for key in sorted(a.keys() - b.keys()):
            if len(out) < limit:
                out.append(f"{path}.{key}: missing (expected {a[key]!r})".lstrip("."))
        for key in sorted(b.keys() - a.keys()):
            if len(out) < limit:
                out.append(f"{path}.{key}: unexpected (new value {b[key]!r})".lstrip("."))
        for key in sorted(a.keys() & b.keys()):
            _diff(a[key], b[key], f"{path}.{key}".lstrip("."), out, limit)
    elif isinstance(a, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} -> {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff(x, y, f"{path}[{i}]", out, limit)
    elif isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return
    elif a != b:
        out.append(f"{where}: {a!r} -> {b!r}")


def write(methods: Path = METHODS_FILE, interfaces_path: Path = INTERFACES_FILE) -> None:
    methods.parent.mkdir(parents=True, exist_ok=True)
    interfaces_path.parent.mkdir(parents=True, exist_ok=True)
    interfaces_path.write_text(dumps(interfaces()))
    methods.write_text(dumps(run_cases()))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="regenerate tests/golden/methods.json and interfaces.json")
    parser.add_argument("--methods", type=Path, default=METHODS_FILE,
                        help="where --write puts the methods golden (default: %(default)s)")
    parser.add_argument("--interfaces", type=Path, default=INTERFACES_FILE,
                        help="where --write puts the interfaces golden (default: %(default)s)")
    args = parser.parse_args()
    if not args.write:
        parser.error("nothing to do: pass --write (only for an intended behaviour change)")
    write(args.methods, args.interfaces)
    print(f"wrote {args.methods} and {args.interfaces}", file=sys.stderr)
