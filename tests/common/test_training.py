"""common.training: learning, early stopping, checkpoint/resume, devices and DDP (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from common.training import (
    TrainConfig,
    accuracy,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
    select_device,
    setup_distributed,
)

REPO = Path(__file__).resolve().parents[2]


def blobs(n: int, seed: int, noise: float = 1.0) -> TensorDataset:
    """Two 2-D Gaussian blobs at (-2, -2) and (2, 2); x: [n, 2] float32, y: [n] int64 in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = noise * torch.randn(n, 2, generator=g) + (y.float() * 4 - 2).unsqueeze(1)
    return TensorDataset(x, y)


def mlp(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=4, lr=0.02, batch_size=32, progress=False, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def _no_torchrun_env(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def test_fit_learns_and_restores_best():
    model = mlp(0)
    train, val = blobs(400, 0), blobs(200, 1)
    result = fit(
        model,
        train,
        val,
        nn.CrossEntropyLoss(),
        cfg(epochs=5, monitor="val_accuracy", mode="max"),
        metrics={"accuracy": accuracy},
    )
    hist = result.history
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4, 5]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] * 0.5
    assert result.best_metric > 0.9
    assert set(hist[0]) >= {"train_loss", "val_loss", "val_accuracy", "lr", "time_s"}
    assert hist[-1]["lr"] < 1e-3 * 0.02  # cosine annealed to ~0 by the last step
    # restore_best: the returned model is the best epoch's, evaluate() reproduces its row
    again = evaluate(model, val, nn.CrossEntropyLoss(), {"accuracy": accuracy}, batch_size=64, device="cpu")
    best_row = hist[result.best_epoch - 1]
    assert again["accuracy"] == pytest.approx(best_row["val_accuracy"])
    assert again["loss"] == pytest.approx(best_row["val_loss"], rel=1e-5)


def test_early_stopping_stops_before_epochs(tmp_path):
    """A metric that never improves after epoch 1 stops training after 1 + patience epochs."""
    flat = {"flat": lambda out, y: 0.5}
    data = blobs(64, 0), blobs(32, 1)
    kw = dict(epochs=20, monitor="val_flat", mode="max", checkpoint_dir=tmp_path)
    result = fit(mlp(0), *data, nn.CrossEntropyLoss(), cfg(early_stopping_patience=2, **kw), metrics=flat)
    assert result.stopped_early
    assert len(result.history) == 3
    assert (result.best_epoch, result.best_metric) == (1, 0.5)
    # resuming with more patience carries on from the checkpoint until the new patience runs out
    more = fit(mlp(0), *data, nn.CrossEntropyLoss(), cfg(early_stopping_patience=4, **kw), metrics=flat)
    assert more.stopped_early and len(more.history) == 5 and more.best_epoch == 1


def test_unknown_monitor_is_rejected():
    with pytest.raises(ValueError, match="val_accuracy"):
        fit(mlp(0), blobs(32, 0), None, nn.CrossEntropyLoss(), cfg(monitor="val_accuracy"))


def test_checkpoint_roundtrip_carries_config(tmp_path):
    model = mlp(0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    config = cfg(checkpoint_dir=tmp_path / "ck", scheduler="onecycle")
    path = save_checkpoint(
        tmp_path / "ck" / "x.pt",
        model=model,
        optimizer=opt,
        scheduler=sched,
        scaler=scaler,
        epoch=3,
        best={"metric": 0.1, "epoch": 2, "bad_epochs": 1},
        config=config,
        extra={"note": "hi"},
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.pt"]  # no temp file left behind
    ckpt = load_checkpoint(path)  # weights_only=True: only plain types and tensors inside
    assert ckpt["epoch"] == 3 and ckpt["best"]["epoch"] == 2 and ckpt["extra"] == {"note": "hi"}
    assert ckpt["config"]["checkpoint_dir"] == str(tmp_path / "ck")
    assert TrainConfig.from_dict(ckpt["config"]) == config
    fresh = mlp(1)
    fresh.load_state_dict(ckpt["model"])
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True))


def test_fit_writes_last_and_best_checkpoints(tmp_path):
    config = cfg(epochs=3, checkpoint_dir=tmp_path)
    result = fit(mlp(0), blobs(64, 0), blobs(32, 1), nn.CrossEntropyLoss(), config)
    assert result.checkpoint_path == tmp_path / "best.pt"
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert last["epoch"] == 3 and best["epoch"] == result.best_epoch
    assert TrainConfig.from_dict(last["config"]) == config
    assert len(last["extra"]["history"]) == 3


class Interrupt(RuntimeError):
    pass


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_resume_matches_uninterrupted_run(tmp_path, scheduler):
    """Crash after epoch 2 of 5, resume with a freshly initialised model: same weights and history."""
    train, val = blobs(96, 0, noise=2.0), blobs(40, 1, noise=2.0)
    loss = nn.CrossEntropyLoss()
    kw = dict(epochs=5, scheduler=scheduler, grad_clip=0.5, weight_decay=0.01, early_stopping_patience=None)

    ref_model = mlp(0, dropout=0.3)  # dropout: the RNG state must be restored too
    ref = fit(ref_model, train, val, loss, cfg(checkpoint_dir=tmp_path / "ref", **kw))

    def crash(epoch, row):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(mlp(0, dropout=0.3), train, val, loss, cfg(checkpoint_dir=tmp_path / "run", **kw), on_epoch_end=crash)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2
    resumed_model = mlp(7, dropout=0.3)  # different init: everything must come from the checkpoint
    resumed = fit(resumed_model, train, val, loss, cfg(checkpoint_dir=tmp_path / "run", **kw))

    def strip(h):
        return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]

    assert strip(resumed.history) == strip(ref.history)
    assert (resumed.best_epoch, resumed.best_metric) == (ref.best_epoch, ref.best_metric)
    for (name, a), b in zip(ref_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # resuming a finished run trains nothing and reports the same result
    again = fit(mlp(3, dropout=0.3), train, val, loss, cfg(checkpoint_dir=tmp_path / "run", **kw))
    assert strip(again.history) == strip(ref.history)


def test_cpu_bf16_autocast_trains():
    result = fit(
        mlp(0),
        blobs(128, 0),
        blobs(64, 1),
        nn.CrossEntropyLoss(),
        cfg(epochs=3, amp=True, amp_dtype="bfloat16"),
        metrics={"accuracy": accuracy},
    )
    assert result.history[-1]["val_accuracy"] > 0.9


def test_select_device(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")


def test_setup_distributed_is_a_noop_without_torchrun():
    info = setup_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    assert info.device == torch.device("cpu")
    assert not torch.distributed.is_initialized()


def test_ddp_two_processes(tmp_path):
    """torchrun, 2 CPU ranks (gloo): both finish with identical weights, rank 0 alone writes checkpoints."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests" / "common" / "ddp_fit_script.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name  # inits differed: DDP broadcast + synced gradients
    h0, h1 = (json.loads((tmp_path / f"history{r}.json").read_text()) for r in (0, 1))
    strip = [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h0]
    assert strip == [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h1]  # reduced metrics
    assert h0[-1]["train_loss"] < h0[0]["train_loss"] and h0[-1]["val_accuracy"] > 0.9

    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best.pt", "last.pt"]
    last = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert last["extra"]["world_size"] == 2 and len(last["extra"]["rng"]) == 2
    assert last["config"]["batch_size"] == 32
    best = load_checkpoint(tmp_path / "ckpt" / "best.pt")
    for name in w0:  # restore_best: the returned model is best.pt's
        assert torch.equal(best["model"][name], w0[name])
