"""The GPU path in one prepared run: throughput, four trainings packed on one card, and the four
baselines at paper length, within a fixed budget (8 minutes on one H100).

It imports only lt-ray's core (config, data, engine, methods: what ``lt-ray train`` imports), so
it runs from a plain checkout where Ray, Optuna and kornia are absent; the training processes
of phase 2 are started here, one per run, as Ray would start them with ``resources.gpu: 0.25``.

Steps:

``pack`` (here, with the data): CIFAR-10-LT IF 100, built exactly as lt-ray builds it (train
    subset, val/test halves of the test set), written losslessly with a checksum
    (``lt_ray.data.pack``) under the git-ignored ``.devicepack/``, plus the wheels of the
    pure-Python packages the GPU machine lacks (kornia, for PaCo's key view). Refuses to leave
    a pack over the 64 MiB that travels with a checkout.
``run --out DIR`` (on the GPU machine; ``benchmarks/device_check.sh`` installs the wheels):
    phase 1, throughput (~1 min): training images/s of CE ResNet-32 in bf16/fp32 x batch
    128/512, bf16 with ``train.compile=on`` (compile time reported), a hand-written loop in
    the same process (the engine's ratio to it), RIDE (3 experts) and PaCo, and a profiled
    CE epoch (the share of time the GPU runs kernels: whether batches wait on Python, its
    trace kept); phase 2, packing
    (the rest of the budget): one CE process alone for a few epochs (the baseline), then
    CE, BSCE, LDAM-DRW and LADE as four processes at once for a few epochs (the packing
    probe), then the same four at 200 epochs, or at as many as the probe's speed fits in the
    time left (printed: the recipes' schedules scale with the epochs). Writes
    ``device_check.json`` and ``device_check.md`` to DIR.
``run --smoke --out DIR``: the same code path on the CPU with a tiny synthetic pack, tiny
    epochs and no compile (the test suite runs it).

    python benchmarks/device_check.py pack --data-root ../shared/data
    bash benchmarks/device_check.sh OUT_DIR          # on the GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import engine_fit, plain_rate, small_eval_data, subset  # noqa: E402

from lt_ray.config import ExperimentConfig  # noqa: E402
from lt_ray.data import build_dataset  # noqa: E402
from lt_ray.data.pack import read_pack, write_pack  # noqa: E402
from lt_ray.engine import fit, resolve_precision  # noqa: E402
from lt_ray.experiment import build_method, run  # noqa: E402
from lt_ray.resolution import resolve  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PACK_DIR = ROOT / ".devicepack"
PACK_FILE = "cifar10-lt-if100.npz"
CARRY_LIMIT = 64 * 2**20  # what travels with a checkout to the GPU machine, everything included
BUDGET_S = 480.0  # the whole run on the GPU machine: 8 minutes
PAPER_EPOCHS = 200
PACKED = ("ce", "bsce", "ldam_drw", "lade")  # phase 2, one process each
WHEELS = ("kornia", "kornia_rs")  # pure-Python (or manylinux) packages the GPU image lacks
DATA = {"dataset": "cifar10", "imb_factor": 100, "imb_type": "exp"}


@dataclass(frozen=True)
class Plan:
    """The sizes of one run: the GPU plan, or the CPU smoke plan."""

    device: str
    budget_s: float
    throughput_epochs: int  # per variant; the first is warm-up
    baseline_epochs: int
    probe_epochs: int
    max_epochs: int
    compile: bool
    smoke: bool = False
    threads: int | None = None  # torch threads per process (CPU only)
    batches: tuple[int, ...] = (128, 512)
    precisions: tuple[str, ...] = ("bf16", "fp32")
    extra: dict[str, Any] = field(default_factory=dict)


GPU_PLAN = Plan(device="cuda", budget_s=BUDGET_S, throughput_epochs=3, baseline_epochs=4,
                probe_epochs=3, max_epochs=PAPER_EPOCHS, compile=True)
SMOKE_PLAN = Plan(device="cpu", budget_s=240.0, throughput_epochs=2, baseline_epochs=1,
                  probe_epochs=1, max_epochs=2, compile=False, smoke=True, threads=1,
                  batches=(32, 64), precisions=("fp32",))


# --- pack (here) ------------------------------------------------------------------------------


def data_config(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"dataset": "synthetic", "imb_factor": 10, "download": False,
                "synthetic": {"num_classes": 10, "n_max": 48, "image_size": 32,
                              "test_per_class": 8}}
    return {**DATA, "download": False}


def tracked_bytes() -> int:
    """Bytes of the checkout's tracked files (they travel too)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                               check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode())
               .is_file())


def download_wheels(folder: Path) -> list[str]:
    """The wheels of :data:`WHEELS` at this machine's versions, for CPython 3.12 manylinux."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                             "manylinux2014_x86_64")]
    got = []
    for name in WHEELS:
        spec = f"{name}=={metadata.version(name)}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", *platforms,
               "-d", str(folder), spec]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            print(f"pack: could not download {spec}: PaCo will be skipped on the device",
                  file=sys.stderr)
            continue
        got.append(spec)
    return got


def cmd_pack(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    cfg = ExperimentConfig.from_dict({"data": data_config(args.smoke)})
    data = build_dataset(cfg.data, args.data_root)
    manifest = write_pack(data, folder, name=PACK_FILE, source=cfg.to_dict()["data"])
    wheels = [] if args.no_wheels else download_wheels(folder / "wheels")
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    travels = total + tracked_bytes()
    print(f"pack: {folder}: {len(data.train)} train + {len(data.fulltest)} test images, "
          f"{manifest['bytes'] / 2**20:.1f} MiB (sha256 {manifest['sha256'][:12]}), wheels "
          f"{', '.join(wheels) or 'none'}; with the tracked files {travels / 2**20:.1f} MiB "
          f"of {CARRY_LIMIT / 2**20:.0f} MiB")
    if travels > CARRY_LIMIT:
        print(f"error: {travels / 2**20:.1f} MiB would not travel (limit "
              f"{CARRY_LIMIT / 2**20:.0f} MiB); nothing to carry was left", file=sys.stderr)
        for p in sorted(folder.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        return 2
    return 0


# --- phase 1: throughput ----------------------------------------------------------------------


def train_config(method: str, epochs: int, plan: Plan, **train: Any) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "data": data_config(plan.smoke),
        "method": {"name": method}, "seed": 0,
        "train": {"epochs": epochs, "device": plan.device, **train},
    })


def engine_rate(data: Any, method: str, plan: Plan, **train: Any) -> dict[str, Any]:
    """Images/s of the engine over the epochs after the first, and the first epoch's time."""
    cfg = train_config(method, plan.throughput_epochs, plan, eval_every=10_000, **train)
    result = engine_fit(data, cfg)
    timed = result.history[1:]
    rate = statistics.mean(h["train_images_per_s"] for h in timed)
    steady = statistics.mean(h["epoch_time_s"] for h in timed)
    return {"images_per_s": round(rate, 1),
            "first_epoch_s": round(result.history[0]["epoch_time_s"], 2),
            "epoch_s": round(steady, 2), "compiled": result.metrics["compiled"],
            "peak_mem_mib": peak_mib(torch.device(plan.device))}


def peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return round(peak, 1)


def gpu_trace(data: Any, plan: Plan, out: Path) -> dict[str, Any]:
    """Whether batches wait on Python: the share of a profiled CE epoch (bf16, batch 128, 20
    steps, after a warm-up epoch) during which the GPU runs kernels. Near 1: the GPU is the
    limit; far below: the step is bound by Python and kernel launches. The trace is kept."""
    if plan.device != "cuda":
        return {"skipped": "no GPU (the CPU has no kernel timeline to read)"}
    from torch.profiler import ProfilerActivity, profile

    train = subset(data.train, 20 * 128, data.num_classes)
    small = replace(small_eval_data(data), train=train,
                    class_counts=torch.bincount(train.y, minlength=data.num_classes))
    cfg = train_config("ce", 1, plan, eval_every=10_000, compile="off")
    engine_fit(small, cfg)  # warm-up: cudnn's choices
    resolved = resolve(cfg)
    method = build_method(resolved, small, torch.device(plan.device))
    torch.cuda.synchronize()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fit(method, small, resolved.config)
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    kernels_us = sum(e.self_device_time_total for e in prof.key_averages()
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    prof.export_chrome_trace(str(out / "trace_ce_bf16_b128.json"))
    return {"steps": 20, "wall_s": round(wall, 3), "kernel_s": round(kernels_us / 1e6, 3),
            "gpu_busy": round(kernels_us / 1e6 / wall, 3)}


def phase_throughput(data: Any, plan: Plan, log: Any) -> dict[str, Any]:
    device = torch.device(plan.device)
    out: dict[str, Any] = {}
    for precision in plan.precisions:
        for batch in plan.batches:
            key = f"ce_{precision}_b{batch}"
            out[key] = engine_rate(data, "ce", plan, precision=precision, batch_size=batch,
                                   compile="off")
            log(f"{key}: {out[key]}")
    first, first_b = plan.precisions[0], plan.batches[0]
    eager = out[f"ce_{first}_b{first_b}"]
    if plan.compile:
        key = f"ce_{first}_b{first_b}_compiled"
        out[key] = engine_rate(data, "ce", plan, precision=first, batch_size=first_b,
                               compile="on")
        # the first epoch's extra time over an eager first epoch: tracing and code generation
        out[key]["compile_s"] = round(
            (out[key]["first_epoch_s"] - out[key]["epoch_s"])
            - (eager["first_epoch_s"] - eager["epoch_s"]), 1)
        out[key]["speedup"] = round(out[key]["images_per_s"] / eager["images_per_s"], 3)
        log(f"{key}: {out[key]}")
    dtype = resolve_precision(first, device)
    hand = plain_rate(data, plan.throughput_epochs, dtype, channels_last=True, device=device,
                      batch_size=first_b)
    out["hand_loop"] = {"images_per_s": round(hand, 1),
                        "engine_ratio": round(eager["images_per_s"] / hand, 3)}
    log(f"hand_loop: {out['hand_loop']}")
    for method in ("ride", "paco"):
        try:
            out[method] = engine_rate(data, method, plan, precision=first, batch_size=first_b,
                                      compile="off")
        except ImportError as exc:  # PaCo's key view needs kornia (carried as a wheel)
            out[method] = {"skipped": f"{type(exc).__name__}: {exc}"}
        log(f"{method}: {out[method]}")
    return out


# --- phase 2: packing -------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    """One training process of phase 2: train, then write its figures as JSON."""
    plan = SMOKE_PLAN if args.smoke else GPU_PLAN
    if plan.threads:
        torch.set_num_threads(plan.threads)
    start = time.perf_counter()
    data = read_pack(Path(args.pack))
    cfg = train_config(args.method, args.epochs, plan,
                       eval_every=max(1, args.epochs // 10), compile="off")
    device = torch.device(plan.device)
    result = run(resolve(cfg), None, data=data, artifacts=args.artifacts)
    history = result.history
    timed = history[1:] or history
    figures = {
        "method": args.method, "epochs": args.epochs, "wall_s": round(time.perf_counter() -
                                                                      start, 1),
        "train_s": round(sum(h["epoch_time_s"] for h in history), 1),
        "images_per_s": round(statistics.mean(h["train_images_per_s"] for h in timed), 1),
        "peak_mem_mib": peak_mib(device),
        **{k: round(100 * result.metrics[f"fulltest_{k}"], 2)
           for k in ("acc", "gm", "hm", "lr")},
    }
    Path(args.result).write_text(json.dumps(figures))
    return 0


def train_processes(methods: tuple[str, ...], epochs: int, pack: Path, work: Path,
                    plan: Plan, tag: str) -> list[dict[str, Any]]:
    """``methods`` as simultaneous processes of this script; their figures, in order."""
    procs = []
    for method in methods:
        result = work / f"{tag}-{method}.json"
        cmd = [sys.executable, __file__, "worker", "--pack", str(pack), "--method", method,
               "--epochs", str(epochs), "--result", str(result),
               "--artifacts", str(work / "artifacts")]
        if plan.smoke:
            cmd.append("--smoke")
        log_file = open(work / f"{tag}-{method}.log", "w")  # noqa: SIM115 (closed below)
        procs.append((method, result, log_file, subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)))
    figures = []
    for method, result, log_file, proc in procs:
        code = proc.wait()
        log_file.close()
        if code != 0:
            tail = (work / f"{tag}-{method}.log").read_text().splitlines()[-5:]
            raise RuntimeError(f"{tag} {method} exited {code}: " + " | ".join(tail))
        figures.append(json.loads(result.read_text()))
    return figures


def fit_epochs(probe: list[dict[str, Any]], train_images: int, seconds: float,
               plan: Plan) -> int:
    """The epochs the four runs can train in ``seconds`` at the probe's slowest speed (each run
    also pays its start-up and evaluation: the probe's wall time beyond its training)."""
    overhead = max(p["wall_s"] - p["train_s"] for p in probe)
    slowest = min(p["images_per_s"] for p in probe)
    fits = int((seconds - 1.5 * overhead) * slowest / train_images)
    return max(1, min(plan.max_epochs, fits))


def phase_packing(pack: Path, train_images: int, plan: Plan, deadline: float,
                  log: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        alone = train_processes(("ce",), plan.baseline_epochs, pack, work, plan, "baseline")[0]
        log(f"baseline (1 process, {plan.baseline_epochs} epochs): {alone}")
        probe = train_processes(PACKED, plan.probe_epochs, pack, work, plan, "probe")
        log(f"probe (4 processes, {plan.probe_epochs} epochs): {probe}")
        left = deadline - time.perf_counter()
        epochs = fit_epochs(probe, train_images, 0.9 * left, plan)
        if epochs == plan.max_epochs:
            note = f"{epochs} epochs, the plan's full length"
        else:
            note = (f"{epochs} epochs, not {plan.max_epochs}: 4 x {plan.max_epochs} epochs do "
                    f"not fit the {left:.0f} s left at the probe's speed (schedules scaled)")
        log(f"packed runs: {note}")
        runs = train_processes(PACKED, epochs, pack, work, plan, "packed")
    aggregate_probe = sum(p["images_per_s"] for p in probe)
    return {
        "baseline": alone, "probe": probe, "runs": runs, "epochs": epochs, "note": note,
        "aggregate_images_per_s": round(sum(r["images_per_s"] for r in runs), 1),
        "packing_ratio_probe": round(aggregate_probe / alone["images_per_s"], 2),
        "packing_ratio": round(sum(r["images_per_s"] for r in runs) / alone["images_per_s"], 2),
    }


# --- run --------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    plan = SMOKE_PLAN if args.smoke else GPU_PLAN
    if args.budget_s:
        plan = replace(plan, budget_s=args.budget_s)
    start = time.perf_counter()
    deadline = start + plan.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {line}", flush=True)

    if plan.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run it on the GPU machine, or use --smoke",
              file=sys.stderr)
        return 2
    if plan.threads:
        torch.set_num_threads(plan.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pack = Path(args.pack)
        if args.smoke:  # a tiny synthetic pack, written the way `pack` writes the real one
            pack = Path(tmp) / "pack"
            cmd_pack(argparse.Namespace(dir=str(pack), data_root=None, smoke=True,
                                        no_wheels=True))
        data = read_pack(pack)
        log(f"pack {pack}: {len(data.train)} train images, checksum ok")
        summary: dict[str, Any] = {"environment": environment(plan), "plan": plan.__dict__,
                                   "budget_s": plan.budget_s}
        summary["throughput"] = phase_throughput(data, plan, log)
        summary["trace"] = gpu_trace(data, plan, out)
        log(f"trace: {summary['trace']}")
        summary["phase1_s"] = round(time.perf_counter() - start, 1)
        summary["packing"] = phase_packing(pack, len(data.train), plan, deadline, log)
    summary["total_s"] = round(time.perf_counter() - start, 1)
    (out / "device_check.json").write_text(json.dumps(summary, indent=1))
    (out / "device_check.md").write_text(markdown(summary))
    log(f"done: {out / 'device_check.json'}, {out / 'device_check.md'}")
    return 0


def environment(plan: Plan) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "device": plan.device, "cpu_threads": torch.get_num_threads()}
    if plan.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": props.name, "gpu_mem_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count}
    return env


def markdown(s: dict[str, Any]) -> str:
    env, tp, pk = s["environment"], s["throughput"], s["packing"]
    lines = [f"# device check: {env.get('gpu', env['device'])}", "",
             f"torch {env['torch']}, Python {env['python']}; {s['total_s']} s of a "
             f"{s['budget_s']:.0f} s budget (phase 1: {s['phase1_s']} s).", "",
             "## Phase 1: training throughput (CE ResNet-32, CIFAR-10-LT IF 100, images/s)", "",
             "| variant | images/s | first epoch s | epoch s | peak MiB | note |",
             "|---|---|---|---|---|---|"]
    for key, v in tp.items():
        if "skipped" in v:
            lines.append(f"| {key} | - | - | - | - | skipped: {v['skipped']} |")
            continue
        note = ""
        if "compile_s" in v:
            note = f"compile ~{v['compile_s']} s, {v['speedup']}x eager"
        if "engine_ratio" in v:
            note = f"engine / hand loop = {v['engine_ratio']}"
        lines.append(f"| {key} | {v['images_per_s']} | {v.get('first_epoch_s', '-')} | "
                     f"{v.get('epoch_s', '-')} | {v.get('peak_mem_mib') or '-'} | {note} |")
    tr = s["trace"]
    lines += ["", "GPU busy during a profiled CE epoch (bf16, batch 128): " + (
        f"{tr['gpu_busy']} ({tr['kernel_s']} s of kernels in {tr['wall_s']} s; trace "
        "trace_ce_bf16_b128.json)" if "gpu_busy" in tr else f"skipped: {tr['skipped']}") + "."]
    lines += ["", "## Phase 2: four trainings on one device (paper recipes, seed 0)", "",
              f"Baseline, one CE process alone: {pk['baseline']['images_per_s']} images/s. "
              f"Four processes at once: {pk['aggregate_images_per_s']} images/s together, "
              f"packing ratio {pk['packing_ratio']} (probe: {pk['packing_ratio_probe']}). "
              f"{pk['note']}.", "",
              "| method | epochs | wall s | images/s | peak MiB | Acc | GM | HM | LR |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in pk["runs"]:
        lines.append(f"| {r['method']} | {r['epochs']} | {r['wall_s']} | {r['images_per_s']} | "
                     f"{r['peak_mem_mib'] or '-'} | {r['acc']} | {r['gm']} | {r['hm']} | "
                     f"{r['lr']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="write the data pack and wheels (here, with the data)")
    p.add_argument("--data-root", default=os.environ.get("LT_RAY_DATA"))
    p.add_argument("--dir", default=str(PACK_DIR))
    p.add_argument("--smoke", action="store_true", help="a tiny synthetic pack")
    p.add_argument("--no-wheels", action="store_true")
    r = sub.add_parser("run", help="phase 1 and 2 (on the GPU machine)")
    r.add_argument("--out", required=True)
    r.add_argument("--pack", default=str(PACK_DIR))
    r.add_argument("--smoke", action="store_true", help="CPU, tiny synthetic data")
    r.add_argument("--budget-s", type=float, default=None, help=f"default {BUDGET_S:.0f}")
    w = sub.add_parser("worker", help="one training process of phase 2 (internal)")
    w.add_argument("--pack", required=True)
    w.add_argument("--method", required=True)
    w.add_argument("--epochs", type=int, required=True)
    w.add_argument("--result", required=True)
    w.add_argument("--artifacts", required=True)
    w.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    return {"pack": cmd_pack, "run": cmd_run, "worker": cmd_worker}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
