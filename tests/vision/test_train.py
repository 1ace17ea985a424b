"""Training: a tiny net learns, an interrupted run resumes to the same weights, initialisation from files and
pretrained weights (offline), calibration, and the common.training extensions vision relies on."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from apps.vision.data import load, train_val_test
from apps.vision.evaluate import calibrate, evaluate_model, fit_temperature
from apps.vision.model import VisionModel, build, load_matching
from apps.vision.train import fit_model, make_model, random_translate, train, triangle
from common import training
from common.data import DataError, DownloadError
from tests.vision.conftest import tiny_config


def _split(folder: Path, cfg):
    return train_val_test(
        load(folder, image_size=cfg.image_size, progress=False), cfg.val_fraction, cfg.test_fraction, cfg.seed
    )


def test_tiny_model_learns_above_chance_and_saves(tiny_folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=4)
    tr, va, te = _split(tiny_folder, cfg)
    model, result = train(tr, va, cfg, progress=False)
    assert len(result.history) == 4 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    calibrate(model, va)
    res = evaluate_model(model, te)
    assert res["accuracy"] >= 0.6, res["accuracy"]  # chance is 1/3
    assert 0.05 <= model.temperature <= 20
    again = VisionModel.load(model.save(tmp_path / "m"))
    assert again.classes == model.classes and again.temperature == model.temperature
    assert torch.allclose(again.logits(te.images), model.logits(te.images), atol=1e-5)


class Stop(RuntimeError):
    pass


def test_resume_from_checkpoint_continues_the_same_run(tiny_folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=3)
    tr, va, _ = _split(tiny_folder, cfg)

    ref = make_model(cfg, tr)
    ref_hist = fit_model(ref, tr, va, cfg, checkpoint_dir=tmp_path / "ref", progress=False).history

    def crash(epoch: int, row: dict) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit_model(make_model(cfg, tr), tr, va, cfg, checkpoint_dir=tmp_path / "run", progress=False, on_epoch_end=crash)
    resumed = make_model(tiny_config(epochs=3, seed=7), tr)  # another init: everything comes from the checkpoint
    hist = fit_model(resumed, tr, va, cfg, checkpoint_dir=tmp_path / "run", progress=False).history

    def strip(h):
        return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]

    assert strip(hist) == strip(ref_hist)
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_init_from_a_state_dict_file(tiny_folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config()
    tr, _, _ = _split(tiny_folder, cfg)
    src = make_model(cfg, tr)
    with torch.no_grad():
        src.head[0].weight.add_(1.0)
    torch.save(src.state_dict(), tmp_path / "weights.pt")
    net = make_model(tiny_config(init_from=str(tmp_path / "weights.pt")), tr)
    for (name, a), b in zip(src.state_dict().items(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # a torchvision-style state_dict (ImageNet head of another size) loads into the backbone, head skipped
    rn = build("resnet18", 3)
    import torchvision

    tv = torchvision.models.resnet18(num_classes=1000)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pt")
    counts = load_matching(rn, tmp_path / "resnet18.pt")
    assert counts["skipped"] == 2  # fc.weight, fc.bias
    assert torch.equal(rn.backbone.conv1.weight, tv.conv1.weight)
    # a pickle with code in it is refused (weights_only=True), and so is a mismatched architecture
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "module.pt")
    with pytest.raises(DataError, match="not a tensors-only state_dict"):
        load_matching(rn, tmp_path / "module.pt")
    with pytest.raises(DataError, match="match this architecture"):
        load_matching(rn, tmp_path / "weights.pt")


def test_pretrained_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(DownloadError) as err:
        build("resnet18", 3, pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and "could not fetch the pretrained resnet18 weights" in msg and "--init-from" in msg
    with pytest.raises(DataError, match="not 'airnet' nor a torchvision model"):
        build("resnet_unknown", 3)


def test_torchvision_architecture_trains_a_step(tiny_folder: Path) -> None:
    cfg = tiny_config(arch="mobilenet_v3_small", epochs=1, batch_size=16, ema_decay=0.9)
    tr, va, _ = _split(tiny_folder, cfg)
    model, result = train(tr, va, cfg, progress=False)
    assert len(result.history) == 1 and model.logits(va.images).shape == (len(va), 3)


def test_temperature_scaling_fixes_overconfidence() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2000,), generator=g)
    logits = torch.randn(2000, 4, generator=g)
    logits[torch.arange(2000), labels] += 1.0
    t = fit_temperature(logits * 5, labels)  # 5x too sharp
    assert 4.0 < t < 6.0


def test_augmentation_and_schedule() -> None:
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    torch.manual_seed(0)
    y = random_translate(x, 2)
    assert y.shape == x.shape
    for i in range(2):  # each image is its reflect-padded self, shifted by at most 2 pixels
        padded = torch.nn.functional.pad(x[i : i + 1], (2, 2, 2, 2), mode="reflect")[0]
        assert any(torch.equal(y[i], padded[:, a : a + 6, b : b + 6]) for a in range(5) for b in range(5))
    assert torch.equal(random_translate(x, 0), x)
    assert triangle(0, 100) == pytest.approx(0.2) and triangle(23, 100) == pytest.approx(1.0)
    assert triangle(100, 100) == pytest.approx(0.07)


# ------------------------------------------------------------------------- common.training extensions


def _blobs(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    return TensorDataset(torch.randn(n, 2, generator=g) + (y.float() * 4 - 2).unsqueeze(1), y)


def test_fit_batch_transform_scheduler_factory_and_hooks() -> None:
    seen_epochs, steps = [], []

    def transform(x, y, epoch):
        seen_epochs.append(epoch)
        return x * 1.0, y

    class Count(training.StepHook):
        def after_step(self, model, step, total):
            steps.append((step, total))

    def sched(opt, cfg, total):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5)

    cfg = training.TrainConfig(epochs=2, batch_size=64, progress=False, early_stopping_patience=None, lr=0.05)
    res = training.fit(
        nn.Linear(2, 2),
        _blobs(128, 0),
        _blobs(32, 1),
        nn.CrossEntropyLoss(),
        cfg,
        batch_transform=transform,
        scheduler_factory=sched,
        step_hooks=[Count()],
    )
    assert seen_epochs == [1, 1, 2, 2] and steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert res.history[-1]["lr"] == pytest.approx(0.025) and "train_time_s" in res.history[0]


def test_fit_weight_ema_is_validated_and_returned(tmp_path: Path) -> None:
    cfg = training.TrainConfig(
        epochs=2,
        batch_size=16,
        progress=False,
        early_stopping_patience=None,
        ema_decay=0.5,
        restore_best=False,
        checkpoint_dir=tmp_path,
        lr=0.1,
    )
    model = nn.Linear(2, 2)
    ema = training.WeightEMA(0.5)
    ema.after_step(model, 1, 10)
    assert torch.equal(ema.averaged_state(model)["weight"], model.weight)
    training.fit(model, _blobs(64, 0), _blobs(32, 1), nn.CrossEntropyLoss(), cfg)
    ckpt = training.load_checkpoint(tmp_path / "last.pt")
    shadow = ckpt["extra"]["hooks"][-1]["shadow"]
    assert torch.equal(model.weight.detach(), shadow["weight"])  # the returned model is the average
    assert not torch.equal(ckpt["model"]["weight"], shadow["weight"])  # training continued from live weights
    with pytest.raises(ValueError, match="0 <= decay < 1"):
        training.WeightEMA(1.5)


def test_channels_last_option_trains_conv_nets() -> None:
    x = torch.randn(32, 3, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2))
    cfg = training.TrainConfig(
        epochs=1, batch_size=16, progress=False, channels_last=True, early_stopping_patience=None, monitor="train_loss"
    )
    training.fit(net, TensorDataset(x, y), None, nn.CrossEntropyLoss(), cfg, step_hooks=())
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
