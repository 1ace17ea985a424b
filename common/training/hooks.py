"""Step hooks: code that acts on the model between optimizer steps, with state saved in checkpoints; and
:class:`WeightEMA`, the exponential moving average of the weights that :func:`~common.training.loop.fit` validates
and returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from common.training.distributed import _unwrap


class StepHook:
    """Something that acts on the model between optimizer steps (lookahead, weight averaging, freezing).

    ``after_step`` runs after every optimizer step (``step`` is 1-based over the whole run, ``total_steps`` the
    run's length), ``after_epoch`` after each epoch's last step, before validation. Its state (``state_dict``:
    plain python types and tensors only) is saved in checkpoints and restored on resume.
    """

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called after each optimizer step."""

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called after each epoch's training steps."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class WeightEMA(StepHook):
    """Exponential moving average of the floating-point weights and buffers: every ``every`` steps,
    ``ema = decay * ema + (1 - decay) * w``. :func:`fit` validates, keeps and returns the averaged weights."""

    def __init__(self, decay: float, every: int = 1) -> None:
        if not 0.0 <= decay < 1.0 or every < 1:
            raise ValueError(f"EMA needs 0 <= decay < 1 and every >= 1, got decay={decay}, every={every}")
        self.decay, self.every = decay, every
        self.shadow: dict[str, Tensor] = {}

    def _init(self, model: nn.Module) -> None:
        self.shadow = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:  # noqa: ARG002 - the interface's signature
        if not self.shadow:
            self._init(model)
            return
        if step % self.every:
            return
        with torch.no_grad():
            for k, v in _unwrap(model).state_dict().items():
                if v.is_floating_point():
                    self.shadow[k].lerp_(v.detach(), 1.0 - self.decay)
                else:
                    self.shadow[k].copy_(v)

    def averaged_state(self, model: nn.Module) -> dict[str, Tensor]:
        """The averaged state dict (the model's own before the first step)."""
        return self.shadow if self.shadow else _unwrap(model).state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": {k: v.detach().cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.shadow = {k: v.clone() for k, v in state.get("shadow", {}).items()}


def _swap_state(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Load ``state`` into ``model`` and return a copy of the weights it replaced."""
    net = _unwrap(model)
    old = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    return old
