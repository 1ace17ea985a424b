"""Training precision is chosen by timing the actual model, pinned by the config or MLREF_VISION_AMP, and recorded
with the model; and the monitor's confidence alert, checked on a shift built to be unmistakable."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.vision import precision
from apps.vision.config import Config
from apps.vision.data import load, train_val_test
from apps.vision.lifecycle import load_version, monitor, register
from apps.vision.model import VisionModel, build
from apps.vision.train import train
from common import registry
from common.data import DataError
from tests.vision.conftest import make_folder, tiny_config


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_CACHE", {})
    monkeypatch.delenv(precision.AMP_ENV, raising=False)


def _batch(n: int = 8) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = build("airnet", 3, widths=(8, 16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    return net, torch.rand(n, 3, 16, 16) * 255, torch.arange(n) % 3


def test_config_pins_both_halves_and_nothing_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("measured although the config pins the precision")

    monkeypatch.setattr(precision, "_time_candidates", boom)
    net, x, y = _batch()
    p = precision.choose(Config(amp=False, channels_last=False), net, x, y, device=torch.device("cpu"))
    assert (p.amp, p.channels_last, p.source, p.rates) == (False, False, "config", {})
    assert p.name == "float32"


@pytest.mark.parametrize(("value", "amp"), [("on", True), ("off", False), ("1", True), ("false", False)])
def test_environment_pins_amp_where_the_config_leaves_it_open(
    monkeypatch: pytest.MonkeyPatch, value: str, amp: bool
) -> None:
    monkeypatch.setenv(precision.AMP_ENV, value)
    cands, source = precision.candidates(Config(channels_last=True), torch.device("cpu"))
    assert cands == [(amp, True)] and source == precision.AMP_ENV
    # the config still wins over the environment
    assert precision.candidates(Config(amp=not amp, channels_last=True), torch.device("cpu"))[0] == [(not amp, True)]


def test_a_bad_environment_value_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.AMP_ENV, "maybe")
    with pytest.raises(DataError, match="MLREF_VISION_AMP='maybe': expected on, off or auto"):
        precision.candidates(Config(), torch.device("cpu"))


def test_bf16_is_only_tried_where_the_cpu_runs_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.candidates(Config(), torch.device("cpu"))[0] == [(False, True), (False, False)]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.candidates(Config(), torch.device("cpu"))[0] == [
        (False, True),
        (False, False),
        (True, True),
        (True, False),
    ]


def test_the_fastest_measured_candidate_wins_whichever_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    net, x, y = _batch()
    for fastest in [(True, False), (False, True)]:
        monkeypatch.setattr(precision, "_CACHE", {})
        times = {(a, c): 0.5 for a in (False, True) for c in (True, False)}
        times[fastest] = 0.1
        monkeypatch.setattr(precision, "_time_candidates", lambda *a, t=times, **k: dict(t))
        p = precision.choose(Config(), net, x, y, device=torch.device("cpu"))
        assert (p.amp, p.channels_last) == fastest and p.source == "measured"
        assert p.rates[p.name] == pytest.approx(len(x) / 0.1) and len(p.rates) == 4


def test_a_measurement_says_what_it_times_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe can take tens of seconds on a loaded machine: a line names what is timed before it starts (#20)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    net, x, y = _batch()
    logged_before: list[str] = []

    def timed(*args, **kwargs) -> dict[tuple[bool, bool], float]:
        logged_before.extend(r.getMessage() for r in caplog.records)
        return {(False, True): 0.2, (False, False): 0.1}

    monkeypatch.setattr(precision, "_time_candidates", timed)
    with caplog.at_level(logging.INFO, logger=precision.__name__):
        precision.choose(Config(), net, x, y, device=torch.device("cpu"))
    expected = "precision: timing up to 4 training steps of each candidate (float32+channels_last, float32) at batch 8"
    assert expected in logged_before


def test_clearly_slower_candidates_stop_being_timed_after_one_round() -> None:
    cost = {(True, True): 1.0, (True, False): 1.4, (False, True): 4.0, (False, False): 5.0}
    calls: list[tuple[bool, bool]] = []

    def step(c: tuple[bool, bool]) -> float:
        calls.append(c)
        return cost[c]

    times = precision.timed_rounds(list(cost), step, rounds=3)
    assert times == cost  # every candidate keeps a time (ranks under torchrun sum the same keys)
    assert calls.count((True, True)) == calls.count((True, False)) == 1 + 3  # warm-up + every round
    assert calls.count((False, True)) == calls.count((False, False)) == 1 + 1  # warm-up + the first round only


def test_a_real_measurement_leaves_the_net_untouched_and_is_cached() -> None:
    net, x, y = _batch()
    before = copy.deepcopy(net.state_dict())
    cfg = Config(widths=(8, 16, 16), image_size=16)
    p = precision.choose(cfg, net, x, y, device=torch.device("cpu"), rounds=1)
    names = {"float32", "float32+channels_last"}
    if precision.cpu_has_native_bf16():
        names |= {"bfloat16", "bfloat16+channels_last"}
    assert set(p.rates) == names and all(r > 0 for r in p.rates.values())
    assert p.rates[p.name] == max(p.rates.values())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert precision.choose(cfg, net, x, y, device=torch.device("cpu")) is p  # the same shapes: no second probe


def test_a_pinned_choice_is_timed_alone_without_touching_the_net() -> None:
    net, x, y = _batch()
    before = copy.deepcopy(net.state_dict())
    choice = precision.Precision(False, "bfloat16", True, "config")
    assert precision.training_rate(Config(), net, x, y, choice, device=torch.device("cpu")) > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_the_choice_is_stored_with_the_model_and_a_reload_keeps_it(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=1)
    tr, va, _ = train_val_test(
        load(make_folder(tmp_path / "f", per_class=8), image_size=cfg.image_size, progress=False), 0.2, 0.2, 0
    )
    model, result = train(tr, va, cfg, progress=False)
    chosen = result.info["precision"]
    assert chosen["name"] in chosen["rates"] or chosen["source"] != "measured"
    assert model.meta["precision"] == chosen
    assert model.meta["config"]["amp"] is None  # the config as given: a retrain on another CPU measures again
    assert VisionModel.load(model.save(tmp_path / "m")).meta["precision"] == chosen


def test_confidence_alert_fires_on_an_unmistakable_drop_and_not_on_the_training_images(tiny_trained) -> None:
    """A model made maximally unsure (temperature 1e4: every class ~1/3) against its own reference confidence."""
    model, tr, _, _ = tiny_trained
    model = copy.deepcopy(model)
    mv = register(model, tr, metrics={}, dataset="shapes", alias=registry.CHAMPION)
    champion, _ = load_version()
    model_dir = registry.fetch_model_dir(mv)
    calm = monitor(champion, model_dir, tr, None, cfg=Config(confidence_drop=0.1))
    assert not any("confidence dropped" in a for a in calm.alerts)
    champion.temperature = 1e4
    unsure = monitor(champion, model_dir, tr, None, cfg=Config(confidence_drop=0.1))
    assert any("confidence dropped" in a for a in unsure.alerts), unsure.alerts
    assert unsure.stats["current_confidence"] == pytest.approx(1 / len(champion.classes), abs=0.01)
    assert np.isfinite(unsure.stats["reference_confidence"])
