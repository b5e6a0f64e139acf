"""Checkpoints: format version, config, class counts and state dicts; safe loading.

Files are written atomically (temp file + rename) and read with ``weights_only=True``. State
dicts from other code bases (``module.`` prefixes of DataParallel, ``fc``/``linear`` heads) are
mapped onto lt-ray's names; real mismatches are explained.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from lt_ray.errors import CheckpointError

FORMAT_VERSION = 1
HEAD_ALIASES = ("fc.", "linear.", "classifier.")


CHECKPOINT_NAME = "checkpoint.pt"  # in a run folder, an artifact or a Ray trial checkpoint


def checkpoint_file(path: str | Path) -> Path:
    """``path``, or ``path/checkpoint.pt`` when it is a run folder or a Ray trial checkpoint."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


def save_object(obj: Any, f: BinaryIO) -> None:
    """``torch.save`` into ``f``; a signal that arrives during it ends in its own exception.

    Interrupted in the middle of a record, torch's zip writer fails while closing the file
    (``RuntimeError: ... unexpected pos``) and hides the KeyboardInterrupt or SystemExit: a
    stopped build or run would then look like a failed one and lose its last checkpoint."""
    try:
        torch.save(obj, f)
    except Exception as exc:
        stop = exc.__context__
        while stop is not None and not isinstance(stop, (KeyboardInterrupt, SystemExit)):
            stop = stop.__context__
        if stop is None:
            raise
        raise stop from None


def atomic_save(obj: Any, path: str | Path) -> None:
    """:func:`save_object` to a temp file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            save_object(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, *, config: dict[str, Any], class_counts: list[int],
                    state_dict: dict[str, torch.Tensor], **extra: Any) -> None:
    atomic_save(
        {
            "format_version": FORMAT_VERSION,
            "config": config,
            "class_counts": [int(c) for c in class_counts],
            "state_dict": state_dict,
            **extra,
        },
        path,
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an lt-ray checkpoint or a bare state dict from another code base.

    A bare state dict (or ``{"state_dict": ...}`` without our keys) comes back as
    ``{"format_version": None, "state_dict": ...}``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about the file: the error says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        # torch's own message advises weights_only=False: never for a file the user did not
        # make, so it is not passed on
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}): it is truncated, corrupt, "
            "not a torch checkpoint, or holds objects other than tensors and plain values, "
            "which lt-ray never unpickles; re-create it"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    if "format_version" in obj:
        if obj["format_version"] != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} has format version {obj['format_version']}, this lt-ray "
                f"reads version {FORMAT_VERSION}"
            )
        return obj
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors")
    return {"format_version": None, "state_dict": state}


def load_resumable(path: str | Path) -> dict[str, Any]:
    """An lt-ray checkpoint with the training state to resume from (optimizer, RNG, history);
    a CheckpointError for anything else."""
    state = load_checkpoint(path)
    if "optimizer" not in state:
        raise CheckpointError(f"{path} is not a resumable lt-ray checkpoint (it holds no "
                              "training state); start the run anew without --resume")
    return state


def map_foreign_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` prefixes and rename ``fc.``/``linear.`` heads to ``head.``."""
    mapped = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        for alias in HEAD_ALIASES:
            if key.startswith(alias):
                key = "head." + key[len(alias):]
        mapped[key] = value
    return mapped


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``module`` strictly, explaining any mismatch in one message."""
    state = map_foreign_keys(state)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    head = next((k for k in shapes if k.startswith("head.weight")), None)
    if head is not None:
        problems.append(f"class count or head type differs ({head})")
    elif shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:3]))
    if missing:
        problems.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights (e.g. {', '.join(unexpected[:3])})")
    if problems:
        raise CheckpointError(
            f"checkpoint {source} does not match the model: {'; '.join(problems)}. "
            "Use the same model.arch, model.head and dataset as the run that wrote it."
        )
    module.load_state_dict(state)
