"""Training precision chosen by measurement, not by CPU flags.

bfloat16 autocast is not always faster, even where the CPU runs it natively: on an AMX Xeon the airbench-width net
at batch 1024 trains ~1.3x faster in bf16, while the demo's tiny net at batch 64 trains 3.5x *slower* (oneDNN's
bf16 kernels only pay off on large enough convolutions). So before a run, :func:`choose` times a few training
steps of the actual model at the actual batch for each candidate and keeps the fastest:

- fp32, and bf16 autocast where the CPU supports it natively (fp16 autocast on CUDA), each
- with and without channels_last.

Candidates are timed in interleaved rounds (one warm-up step each first) and ranked by their median step time, so
a burst of load on a shared machine hits every candidate alike; one more than 1.5x slower than the best after the
first round is not timed again (on an AMX Xeon at batch 1024, fp32 steps take ~5x as long as bf16 ones).
``amp`` / ``channels_last`` set in the config pin their half of the choice; the environment variable
``MLREF_VISION_AMP`` (``on``/``off``) pins ``amp`` where the config leaves it ``None`` (the test suite uses it to
run every vision test in both precisions). Under ``torchrun`` every rank measures and the ranks' median times are
averaged, so all ranks pick the same.

The choice and the measured rates are logged, stored in ``model.json`` (``meta["precision"]``) and the report.
"""

from __future__ import annotations

import copy
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from apps.vision.config import Config

log = logging.getLogger(__name__)

AMP_ENV = "MLREF_VISION_AMP"  # on|off: pins autocast where the config says amp=None
_ON, _OFF = {"1", "on", "true", "yes"}, {"0", "off", "false", "no"}
_CACHE: dict[tuple, Precision] = {}


@dataclass(frozen=True)
class Precision:
    """How a run trains: ``amp`` (autocast in ``dtype``), ``channels_last``, and why (``source``).

    ``rates``: measured training images/s per candidate (``"bfloat16+channels_last"`` ...), empty when nothing
    was measured (both halves pinned).
    """

    amp: bool
    dtype: str  # the autocast dtype: bfloat16 on CPU, float16 on CUDA (unused when amp is False)
    channels_last: bool
    source: str  # "config", "measured", or "measured (amp pinned by MLREF_VISION_AMP)" ...
    rates: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return _name(self.amp, self.dtype, self.channels_last)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}

    def apply(self, cfg: Config) -> Config:
        """``cfg`` with this choice pinned (so a run started from it measures nothing again)."""
        return Config(**{**cfg.to_dict(), "amp": self.amp, "channels_last": self.channels_last})


def _name(amp: bool, dtype: str, channels_last: bool) -> str:
    return f"{dtype if amp else 'float32'}{'+channels_last' if channels_last else ''}"


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(pref: str = "auto") -> torch.device:
    """The training device for ``pref`` (auto, cpu, cuda, cuda:N, mps); a device this machine lacks is a user error
    in one line, before any data is read."""
    from common import training
    from common.data import DataError

    pref = (pref or "auto").strip().lower()
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DataError(
                f"--device {pref}: no CUDA GPU is visible to torch {torch.__version__} on this machine; "
                "use --device cpu (or auto)"
            )
        index = pref.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise DataError(f"--device {pref}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif pref == "mps" and not torch.backends.mps.is_available():
        raise DataError("--device mps: Apple's MPS backend is not available here; use --device cpu (or auto)")
    elif pref not in ("auto", "cpu", "mps"):
        raise DataError(f"--device {pref!r}: expected auto, cpu, cuda, cuda:N or mps")
    return training.select_device(pref)


def env_amp() -> bool | None:
    """``MLREF_VISION_AMP`` as a bool (None when unset); anything else is a ConfigError-worthy mistake."""
    raw = os.environ.get(AMP_ENV, "").strip().lower()
    if not raw or raw == "auto":
        return None
    if raw in _ON | _OFF:
        return raw in _ON
    from common.data import DataError

    raise DataError(f"{AMP_ENV}={raw!r}: expected on, off or auto")


def candidates(cfg: Config, device: torch.device) -> tuple[list[tuple[bool, bool]], str]:
    """The (amp, channels_last) pairs worth timing on ``device`` under ``cfg``, and where the pins came from."""
    amp_pin, source = cfg.amp, "config"
    if amp_pin is None and (env := env_amp()) is not None:
        amp_pin, source = env, f"{AMP_ENV}"
    if amp_pin is not None:
        amps = [bool(amp_pin)]
    elif device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        amps = [False, True]
    else:
        amps = [False]  # bf16 emulated on AVX2 runs ~7x slower: not worth a probe step
    layouts = [bool(cfg.channels_last)] if cfg.channels_last is not None else [True, False]
    return [(a, c) for a in amps for c in layouts], source


def choose(
    cfg: Config,
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    device: torch.device | None = None,
    rounds: int = 3,
) -> Precision:
    """The fastest (amp, channels_last) for training ``net`` on the batch ``x[B, 3, S, S]`` (float, 0..255),
    ``y[B]`` (class indices). ``net`` is not changed (candidates train a copy)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = "float16" if device.type == "cuda" else "bfloat16"
    cands, pin_source = candidates(cfg, device)
    if len(cands) == 1:
        amp, cl = cands[0]
        return Precision(amp, dtype, cl, pin_source)
    key = (
        cfg.arch,
        tuple(cfg.widths),
        tuple(x.shape),
        int(y.max()) + 1 if len(y) else 0,
        str(device),
        torch.get_num_threads(),
        tuple(cands),
        int(os.environ.get("WORLD_SIZE", 1)),
    )
    if key in _CACHE:
        return _CACHE[key]
    names = ", ".join(_name(a, dtype, c) for a, c in cands)
    log.info("precision: timing up to %d training steps of each candidate (%s) at batch %d", rounds + 1, names, len(x))
    times = _time_candidates(cfg, net, x, y, cands, dtype, device, rounds)
    times = _agree_across_ranks(times)
    best = min(times, key=times.get)
    rates = {_name(a, dtype, c): round(len(x) / t, 1) for (a, c), t in times.items()}
    pinned = [p for p, v in (("amp", cfg.amp), ("channels_last", cfg.channels_last)) if v is not None]
    if pin_source == AMP_ENV:
        pinned.append(f"amp by {AMP_ENV}")
    source = f"measured ({', '.join(pinned)} pinned)" if pinned else "measured"
    choice = Precision(best[0], dtype, best[1], source, rates)
    log.info(
        "precision: %s (%s; training images/s at batch %d: %s)",
        choice.name,
        source,
        len(x),
        ", ".join(f"{k} {v:,.0f}" for k, v in sorted(rates.items(), key=lambda kv: -kv[1])),
    )
    _CACHE[key] = choice
    return choice


def training_step(
    cfg: Config,
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    amp: bool,
    channels_last: bool,
    dtype: str,
    device: torch.device,
) -> Callable[[], None]:
    """One training step of a copy of ``net`` (``net`` is not changed) on the batch ``x``, ``y`` in that precision
    and memory format (SGD-Nesterov at a negligible lr, ``cfg``'s loss): what the probe times and the bench
    profiles."""
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    model = copy.deepcopy(net).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-6, momentum=0.9, nesterov=True)
    xb = x.to(device)
    xb = xb.contiguous(memory_format=torch.channels_last) if channels_last else xb.contiguous()
    yb = y.to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=getattr(torch, dtype), enabled=amp):
            loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()

    return step


def _time_candidates(
    cfg: Config,
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cands: list[tuple[bool, bool]],
    dtype: str,
    device: torch.device,
    rounds: int,
) -> dict[tuple[bool, bool], float]:
    """Median seconds per training step of each candidate, timed in interleaved rounds after a warm-up step."""
    steps = {
        (amp, cl): training_step(cfg, net, x, y, amp=amp, channels_last=cl, dtype=dtype, device=device)
        for amp, cl in cands
    }

    def step(c: tuple[bool, bool]) -> float:
        t0 = time.perf_counter()
        steps[c]()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    return timed_rounds(cands, step, rounds)


def timed_rounds(
    cands: list[tuple[bool, bool]], step: Callable[[tuple[bool, bool]], float], rounds: int
) -> dict[tuple[bool, bool], float]:
    """Median of ``step(c)``'s seconds per candidate: one untimed warm-up each, then interleaved rounds; after the
    first round, candidates more than 1.5x slower than the best are not stepped again."""
    for c in cands:  # warm-up: oneDNN builds its primitives (and bf16 weight copies) on the first step
        step(c)
    samples: dict[tuple[bool, bool], list[float]] = {c: [] for c in cands}
    alive = list(cands)
    for r in range(max(1, rounds)):
        for c in alive:
            samples[c].append(step(c))
        if r == 0:  # a candidate 1.5x slower than the best after one round will not win: stop paying for its steps
            best = min(samples[c][0] for c in alive)
            alive = [c for c in alive if samples[c][0] <= 1.5 * best]
    return {c: statistics.median(s) for c, s in samples.items()}


def training_rate(
    cfg: Config, net: nn.Module, x: torch.Tensor, y: torch.Tensor, choice: Precision, *, device: torch.device
) -> float:
    """Training images/s of ``net`` on the batch ``x``, ``y`` in ``choice``'s precision (median of 3 timed steps
    after a warm-up; ``net`` is not changed): the rate of a choice that was pinned rather than measured."""
    cand = (choice.amp, choice.channels_last)
    return len(x) / _time_candidates(cfg, net, x, y, [cand], choice.dtype, device, rounds=3)[cand]


def _agree_across_ranks(times: dict[tuple[bool, bool], float]) -> dict[tuple[bool, bool], float]:
    """Under torchrun: every rank's times averaged, so all ranks choose the same precision."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return times
    from common import training

    info = training.setup_distributed()
    keys = sorted(times)
    summed = training._all_reduce_sum([times[k] for k in keys], info)
    return {k: s / info.world_size for k, s in zip(keys, summed, strict=True)}
