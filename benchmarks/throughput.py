"""Training throughput of lt-ray's engine against two reference loops, in one run.

(a) engine vs a minimal hand-written torch loop with the same model, batch, data, augmentation,
    precision and memory format (target: ratio >= 0.95: the engine adds no overhead);
(b) engine with its defaults vs the original code bases' loop: a map-style dataset of PIL
    images, per-sample torchvision transforms, a DataLoader, fp32, default memory format
    (target on a 2-core CPU: >= 2x);
(c) with ``--compile``: the engine with ``train.compile=on`` against eager, and the compile time
    (what ``train.compile=auto`` weighs).

Each loop trains ResNet-32 on CIFAR-10-LT (IF 100, 12,406 images; the synthetic dataset when the
real files are absent) for ``--epochs`` epochs; the last epoch is timed (the first warms up
kernels). Prints one JSON object with images/s and the ratios.

    python benchmarks/throughput.py --data-root ../shared/data [--images 4096] [--epochs 2] \
        [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
import torch.nn.functional as F

from lt_ray.config import ExperimentConfig
from lt_ray.data import LTData, build_dataset
from lt_ray.data.base import Split
from lt_ray.data.loader import crop_flip
from lt_ray.engine import FitResult, fit, resolve_precision
from lt_ray.experiment import build_method, runtime_device, seed_everything
from lt_ray.models import build_model
from lt_ray.resolution import resolve


def load(data_root: str | None, images: int | None) -> tuple[LTData, str]:
    cfg = ExperimentConfig.from_dict({"data": {"dataset": "cifar10", "download": False}})
    try:
        data = build_dataset(cfg.data, data_root)
        source = "cifar10-LT IF100"
    except Exception:  # noqa: BLE001 - fall back to synthetic 32x32 images
        cfg = ExperimentConfig.from_dict({"data": {"dataset": "synthetic", "synthetic": {
            "num_classes": 10, "n_max": 5000, "image_size": 32}}})
        data = build_dataset(cfg.data)
        source = "synthetic 32x32 (real CIFAR-10 not found)"
    if images is not None and images < len(data.train):
        train = subset(data.train, images, data.num_classes)
        data = LTData(data.name, train, data.val, data.test, data.fulltest,
                      torch.bincount(train.y, minlength=data.num_classes), data.class_names,
                      data.mean, data.std)
    return data, source


def subset(split: Split, images: int, num_classes: int) -> Split:
    """About ``images`` samples of ``split``, each class cut in proportion (one at least, so
    that every class keeps a sample), in a seeded random order."""
    g = torch.Generator().manual_seed(0)
    keep = []
    for c in range(num_classes):
        idx = torch.nonzero(split.y == c).flatten()
        n = max(1, round(len(idx) * images / len(split))) if len(idx) else 0
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    order = torch.cat(keep)
    order = order[torch.randperm(len(order), generator=g)]
    return Split(split.x[order], split.y[order])


def small_eval_data(data: LTData, n: int = 8) -> LTData:
    """``data`` with its evaluation splits cut to ``n`` images: evaluation is not part of the
    training throughput."""
    tiny = Split(data.val.x[:n], data.val.y[:n])
    return LTData(data.name, data.train, tiny, tiny, tiny, data.class_counts, data.class_names,
                  data.mean, data.std)


def engine_fit(data: LTData, cfg: ExperimentConfig) -> FitResult:
    """One single-stage run of ``cfg`` through the engine on ``data``, seed 0, evaluated on 8
    images (the throughput benchmarks' common path, the GPU check's too)."""
    resolved = resolve(cfg)
    if resolved.stage is not None:
        raise ValueError(f"{cfg.method.name} needs a stage 1: not a throughput variant")
    seed_everything(0)
    method = build_method(resolved, data, runtime_device(resolved.config))
    return fit(method, small_eval_data(data), resolved.config)


def engine_run(data: LTData, epochs: int, precision: str, channels_last: bool,
               compile: str = "off") -> list[dict]:
    """The engine's per-epoch history of CE ResNet-32 on ``data`` (evaluation on 8 images)."""
    cfg = ExperimentConfig.from_dict({
        "data": {"dataset": "cifar10"}, "method": {"name": "ce"},
        "train": {"epochs": epochs, "precision": precision, "channels_last": channels_last,
                  "eval_every": 10_000, "device": "cpu", "compile": compile},
    })
    return engine_fit(data, cfg).history


def engine_rate(data: LTData, epochs: int, precision: str, channels_last: bool) -> float:
    """Images/s of the engine's last epoch (eager)."""
    return float(engine_run(data, epochs, precision, channels_last)[-1]["train_images_per_s"])


def compile_gain(data: LTData, epochs: int, precision: str) -> dict[str, float]:
    """``train.compile=on`` against eager: last-epoch images/s of both, and the compile time
    (the compiled first epoch's extra time over the eager one's)."""
    eager = engine_run(data, epochs, precision, True)
    compiled = engine_run(data, epochs, precision, True, compile="on")
    extra = [h[0]["epoch_time_s"] - h[-1]["epoch_time_s"] for h in (eager, compiled)]
    return {
        "eager_images_per_s": round(eager[-1]["train_images_per_s"], 1),
        "compiled_images_per_s": round(compiled[-1]["train_images_per_s"], 1),
        "speedup": round(compiled[-1]["train_images_per_s"] / eager[-1]["train_images_per_s"],
                         3),
        "compile_s": round(extra[1] - extra[0], 1),
        "steps_per_epoch": -(-len(data.train) // 128),
    }


def plain_rate(data: LTData, epochs: int, dtype: torch.dtype | None, channels_last: bool,
               device: torch.device | None = None, batch_size: int = 128) -> float:
    """The minimal loop: device-resident uint8 data, the same batched crop+flip ops, autocast,
    cross-entropy, SGD. No sampler, rule, method, metrics or logging. Images/s of the last
    epoch."""
    device = device or torch.device("cpu")
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("resnet32", data.num_classes).to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    mean = torch.tensor(data.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(data.std, device=device).view(1, 3, 1, 1) * 255
    x_all, y_all = data.train.x.to(device), data.train.y.to(device)
    n, bs = len(y_all), batch_size
    gen = torch.Generator(device=device).manual_seed(0)
    rate = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(n, device=device, generator=gen)
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            xb = crop_flip(x_all, idx, 4, True, gen)
            xb = ((xb.float() - mean) / std).contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(xb).float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rate = n / (time.perf_counter() - start)
    return rate


def original_rate(data: LTData, epochs: int) -> float:
    """LDAM-DRW/FBL style: PIL images, per-sample torchvision transforms, DataLoader, fp32."""
    from PIL import Image
    from torchvision import transforms

    class PILDataset(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.images = [Image.fromarray(a) for a in data.train.x.permute(0, 2, 3, 1).numpy()]
            self.targets = data.train.y.tolist()
            self.transform = transforms.Compose([
                transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])

        def __len__(self) -> int:
            return len(self.targets)

        def __getitem__(self, i: int):
            return self.transform(self.images[i]), self.targets[i]

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=128, shuffle=True,
                                         num_workers=0)  # FBL's default (workers=0)
    model = build_model("resnet32", data.num_classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    rate = 0.0
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(yb)
        rate = seen / (time.perf_counter() - start)
    return rate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("LT_RAY_DATA"))
    parser.add_argument("--images", type=int, default=None, help="train images (default: all)")
    parser.add_argument("--epochs", type=int, default=2, help="the last one is timed")
    parser.add_argument("--compile", action="store_true",
                        help="also measure train.compile=on against eager (compile time too)")
    args = parser.parse_args(argv)
    data, source = load(args.data_root, args.images)
    dtype = resolve_precision("auto", torch.device("cpu"))
    precision = "fp32" if dtype is None else "bf16"
    eng = engine_rate(data, args.epochs, "auto", channels_last=True)
    plain = plain_rate(data, args.epochs, dtype, channels_last=True)
    orig = original_rate(data, args.epochs)
    print(json.dumps({
        "data": source, "train_images": len(data.train), "model": "resnet32", "batch": 128,
        "device": "cpu", "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "engine_precision": precision,
        "engine_images_per_s": round(eng, 1),
        "plain_loop_images_per_s": round(plain, 1),
        "original_style_images_per_s": round(orig, 1),
        "engine_vs_plain": round(eng / plain, 3),
        "engine_vs_original": round(eng / orig, 3),
        "torch": torch.__version__,
        **({"compile": compile_gain(data, args.epochs, precision)} if args.compile else {}),
    }, indent=1))


if __name__ == "__main__":
    main()
