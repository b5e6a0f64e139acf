"""The Method interface: what the one training loop (engine.fit) calls.

A method owns its networks and loss. The engine calls, in order: ``set_mode`` and
``on_epoch_start`` once per epoch, ``sampler`` to pick the epoch's sampler, ``training_step``
per :class:`~lt_ray.data.Batch` (then backward and the optimizer step), and ``predict`` for
every evaluation. Methods never run a loop of their own.

Contract of ``predict``: calibrated logits, i.e. what a softmax makes probabilities of (a
cosine head returns ``s·cos``, not raw cosines), so that temperatures mean the same for every
method. It returns one tensor, or a dict of named outputs (GML: ``old``, ``new``, ``ens``); the
engine then reports ``{split}_{metric}_{output}`` for each and ``{split}_{metric}`` for
``primary_output``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from lt_ray.context import LTContext
from lt_ray.data import Batch

Outputs = torch.Tensor | dict[str, torch.Tensor]


class StepOutput(NamedTuple):
    loss: torch.Tensor  # scalar to back-propagate
    logits: torch.Tensor  # [B, C] for the running train accuracy
    extras: dict[str, torch.Tensor]  # scalars for logging only


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoArgs:
    """A method without arguments of its own."""


class Method(nn.Module):
    """Base class. Subclasses implement :meth:`training_step` and :meth:`predict`."""

    #: False: batches carry no images (``x`` is None), e.g. a head trained on cached features.
    needs_images: ClassVar[bool] = True
    #: True: training batches carry the uint8 images un-augmented and un-normalised; the method
    #: makes its own views (PaCo's two views). Evaluation batches are normalised as always.
    raw_images: ClassVar[bool] = False
    #: True: the training loader drops the last incomplete batch (a queue of whole batches).
    drop_last: ClassVar[bool] = False
    #: False: ``train.compile=auto`` keeps the training step eager (it does not trace cleanly,
    #: e.g. its augmentation draws from a library's Python-side RNG).
    compilable: ClassVar[bool] = True

    def __init__(self, ctx: LTContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.epoch = 0
        self.num_epochs = 1

    # --- what the engine asks -----------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        """Whether there is anything to train (False: the engine only evaluates)."""
        return any(p.requires_grad for p in self.parameters())

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of the outputs ``predict`` returns as a dict; () for one tensor."""
        return ()

    @property
    def primary_output(self) -> str | None:
        """The named output that ``{split}_{metric}`` reports (None: the only one)."""
        return None

    def set_mode(self, epoch: int) -> None:
        """Put the modules in train/eval mode for ``epoch`` (a frozen backbone keeps its BN in
        eval mode). Default: everything trains."""
        self.train()

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Called before every epoch (0-indexed): DRW switches, curricula, schedules."""
        self.epoch, self.num_epochs = epoch, num_epochs

    def sampler(self) -> tuple[str, dict[str, Any]] | None:
        """The sampler for the current epoch, or None for ``train.sampler``."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; a group may carry ``lr_scale`` (multiplies the lr)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def training_step(self, batch: Batch) -> StepOutput:
        raise NotImplementedError

    def reset_eval_stats(self) -> None:
        """Called before each evaluated split; see :meth:`eval_stats`."""

    def eval_stats(self) -> dict[str, float]:
        """Scalars about the split just predicted, reported as ``{split}_{name}`` (RIDE's
        router: ``experts``, the mean number of experts used per image). Default: none."""
        return {}

    # --- what a trained method offers ---------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, D] of images ``x``."""
        raise NotImplementedError

    def heads(self) -> dict[str, nn.Module]:
        """The classifier heads by name (``main``; GML: ``old`` and ``new``)."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor | None, *, split: str | None = None,
                index: torch.Tensor | None = None) -> Outputs:
        """Calibrated logits [B, C] (or named outputs) of images ``x``; a method with a feature
        cache may use ``split`` and ``index`` (positions in that split) instead of ``x``."""
        raise NotImplementedError
