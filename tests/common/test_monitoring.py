"""common.monitoring: PSI/KS/chi-square drift, reference profile, drift report, performance over time."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from common.monitoring import (
    OTHER,
    REFERENCE_FILE,
    DriftThresholds,
    ReferenceProfile,
    chi_square_test,
    detect_drift,
    ks_test,
    performance_over_time,
    psi,
    run_check,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frame(n: int, seed: int, *, shift: float = 0.0, mix=(0.6, 0.3, 0.1)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.0, 1.0, n) * math.exp(shift),
            "x": rng.normal(0.0, 1.0, n) + shift,
            "channel": rng.choice(["web", "pos", "atm"], size=n, p=list(mix)),
            "prediction": rng.beta(2, 5, n),
        }
    )


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return ReferenceProfile.from_frame(_frame(5000, 0), sample_size=2000)


def test_psi_hand_computed():
    e = [0.25, 0.25, 0.25, 0.25]
    a = [0.10, 0.20, 0.30, 0.40]
    # sum (a-e) ln(a/e) = -.15 ln .4 - .05 ln .8 + .05 ln 1.2 + .15 ln 1.6
    expected = -0.15 * math.log(0.4) - 0.05 * math.log(0.8) + 0.05 * math.log(1.2) + 0.15 * math.log(1.6)
    assert psi(e, a) == pytest.approx(expected, rel=1e-12)
    assert psi(e, a) == pytest.approx(0.228218, abs=1e-6)
    assert psi([10, 10, 10, 10], [1, 2, 3, 4]) == pytest.approx(expected)  # counts are normalised
    assert psi(e, e) == 0.0
    # an empty bin is floored at eps: finite, large
    v = psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2], eps=1e-4)
    assert math.isfinite(v) and v > 1.0


def test_ks_and_chi_square():
    rng = np.random.default_rng(1)
    d, p = ks_test(rng.normal(size=500), rng.normal(size=500))
    assert 0 <= d < 0.15 and p > 0.01
    d, p = ks_test(rng.normal(size=500), rng.normal(1.0, 1.0, size=500))
    assert d > 0.3 and p < 1e-6
    assert all(math.isnan(v) for v in ks_test([], [1.0]))
    stat, p = chi_square_test({"a": 0.5, "b": 0.5}, {"a": 50, "b": 50})
    assert stat == pytest.approx(0.0) and p == pytest.approx(1.0)
    stat, p = chi_square_test({"a": 0.5, "b": 0.5}, {"a": 80, "b": 20})
    assert stat == pytest.approx(36.0) and p < 1e-6  # (80-50)^2/50 + (20-50)^2/50


def test_same_distribution_no_drift(profile):
    rep = detect_drift(profile, _frame(3000, 1))
    assert not rep.drift, rep.features
    assert rep.features["psi"].max() < 0.02
    assert rep.drifted_features == []
    assert rep.prediction_drift is False
    assert rep.exit_code == 0


def test_mean_shift_detected(profile):
    cur = _frame(3000, 2)
    cur["x"] = cur["x"] + 1.0
    rep = detect_drift(profile, cur)
    assert rep.drift
    assert rep.drifted_features == ["x"]
    row = rep.features.set_index("feature").loc["x"]
    assert row["psi"] > 0.2 and row["test"] == "ks" and row["p_value"] < 1e-6


def test_categorical_mix_change_detected(profile):
    rep = detect_drift(profile, _frame(3000, 3, mix=(0.2, 0.3, 0.5)))
    assert rep.drift
    row = rep.features.set_index("feature").loc["channel"]
    assert row["test"] == "chi2" and row["drifted"] and row["p_value"] < 1e-6
    assert rep.drifted_features == ["channel"]


def test_prediction_drift_and_rules(profile):
    cur = _frame(3000, 4)
    cur["prediction"] = np.clip(cur["prediction"] + 0.2, 0, 1)
    rep = detect_drift(profile, cur, DriftThresholds(max_drifted_share=0.5))
    assert rep.prediction_drift and rep.drift  # a drifted prediction alarms on its own by default
    rep = detect_drift(profile, cur, DriftThresholds(max_drifted_share=0.5, prediction_drift_alarms=False))
    assert not rep.drift
    # tiny sample, small shift: the test is not significant, so psi_and_test stays quiet
    small = _frame(60, 5)
    small["x"] = small["x"] + 0.3
    strict = detect_drift(profile, small, DriftThresholds(psi=0.01, rule="psi_and_test"))
    loose = detect_drift(profile, small, DriftThresholds(psi=0.01, rule="psi"))
    assert "x" in loose.drifted_features and "x" not in strict.drifted_features
    assert strict.warnings and "noisy" in strict.warnings[0]


def test_missing_feature_and_unseen_category(profile):
    cur = _frame(1000, 6).drop(columns=["amount"])
    cur.loc[:300, "channel"] = "crypto"
    rep = detect_drift(profile, cur)
    feats = rep.features.set_index("feature")
    assert feats.loc["amount", "test"] == "missing" and feats.loc["amount", "drifted"]
    assert feats.loc["channel", "drifted"]
    assert rep.distributions["channel"]["labels"][-2] == OTHER


def test_null_rate_counts_as_drift(profile):
    cur = _frame(2000, 7)
    cur.loc[:999, "x"] = np.nan
    rep = detect_drift(profile, cur)
    assert "x" in rep.drifted_features
    assert rep.features.set_index("feature").loc["x", "cur_null"] == pytest.approx(0.5)


def test_profile_save_load_round_trip(profile, tmp_path):
    path = profile.save(tmp_path / "model" / "reference.json")
    text = path.read_text()
    json.loads(text)  # plain JSON
    assert "NaN" not in text
    loaded = ReferenceProfile.load(path)
    assert loaded.to_dict() == profile.to_dict()
    cur = _frame(1000, 8, shift=0.5)
    a, b = detect_drift(profile, cur), detect_drift(loaded, cur)
    pd.testing.assert_frame_equal(a.features, b.features)


def test_profile_options():
    df = _frame(500, 9)
    df["store"] = np.arange(500) % 30  # ints, forced categorical, top_n pools the rest
    df["ts"] = pd.date_range("2024-01-01", periods=500, freq="h")
    df.loc[:9, "channel"] = None
    prof = ReferenceProfile.from_frame(df, categorical=["store"], top_n=5, bins=4)
    assert "ts" not in prof.features
    store = prof.features["store"]
    assert store.kind == "categorical" and len(store.fractions) == 7  # 5 + __other__ + __null__
    assert sum(store.fractions.values()) == pytest.approx(1.0)
    assert prof.features["channel"].fractions["__null__"] == pytest.approx(0.02)
    x = prof.features["x"]
    assert len(x.cuts) == 3 and len(x.fractions) == 4
    assert x.fractions == pytest.approx([0.25] * 4)
    # an int categorical read back as float (because of NaNs) still matches its reference categories
    cur = df.copy()
    cur["store"] = cur["store"].astype(float)
    cur.loc[:4, "store"] = np.nan
    row = detect_drift(prof, cur).features.set_index("feature").loc["store"]
    assert row["psi"] < 0.1 and row["cur_null"] == pytest.approx(0.01)
    with pytest.raises(KeyError):
        ReferenceProfile.from_frame(df, categorical=["nope"])


def test_report_files(profile, tmp_path):
    cur = _frame(2000, 10)
    cur["x"] = cur["x"] + 1.0
    rep = detect_drift(profile, cur)
    md_path = rep.save(tmp_path / "drift", title="Fraud drift")
    out = tmp_path / "drift"
    md = md_path.read_text()
    assert md_path.name == "drift.md" and "# Fraud drift" in md and "DRIFT DETECTED" in md
    assert "| x | numeric | ks |" in md
    verdict = json.loads((out / "drift.json").read_text())
    assert verdict["drift"] is True and verdict["drifted_features"] == ["x"]
    assert verdict["thresholds"]["psi"] == 0.2 and "PSI >= 0.2" in verdict["rule"]
    assert {f["feature"] for f in verdict["features"]} == {"amount", "x", "channel", "prediction"}
    for name in ("drift.png", "drift_distributions.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_performance_over_time_hand_made():
    df = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                [
                    "2024-01-01 01:00",
                    "2024-01-01 05:00",
                    "2024-01-01 23:00",
                    "2024-01-02 02:00",
                    "2024-01-02 03:00",
                    "2024-01-04 00:00",
                ]
            ),
            "label": [1, 0, 1, 0, 0, np.nan],  # the last label has not arrived yet
            "score": [0.9, 0.2, 0.4, 0.1, 0.7, 0.5],
        }
    )

    def accuracy(y, s):
        return float(np.mean((s >= 0.5) == (y == 1)))

    def positives(y, s):
        if y.sum() == 0:
            raise ValueError("no positives")
        return float(y.sum())

    perf = performance_over_time(
        df,
        time_col="ts",
        label_col="label",
        score_col="score",
        freq="D",
        metrics={"accuracy": accuracy, "positives": positives},
    )
    assert list(perf.columns) == ["window", "n", "label_mean", "score_mean", "accuracy", "positives"]
    assert list(perf["window"]) == [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-02")]
    assert list(perf["n"]) == [3, 2]
    assert perf["accuracy"].tolist() == pytest.approx([2 / 3, 0.5])
    assert perf["label_mean"].tolist() == pytest.approx([2 / 3, 0.0])
    assert perf["score_mean"].tolist() == pytest.approx([0.5, 0.4])
    assert perf["positives"].iloc[0] == 2.0 and math.isnan(perf["positives"].iloc[1])

    # numeric time (day index), windows of 7 days
    days = pd.DataFrame({"day": [0, 3, 6, 7, 13, 14], "y": [1, 0, 1, 1, 0, 0], "s": [0.8, 0.3, 0.6, 0.2, 0.1, 0.9]})
    perf = performance_over_time(
        days,
        time_col="day",
        label_col="y",
        score_col="s",
        freq=7,
        metrics={"accuracy": accuracy},
        min_count=2,
    )
    assert perf["window"].tolist() == [0.0, 7.0, 14.0]
    assert perf["n"].tolist() == [3, 2, 1]
    assert perf["accuracy"].iloc[:2].tolist() == pytest.approx([1.0, 0.5])
    assert math.isnan(perf["accuracy"].iloc[2])  # below min_count


# ------------------------------------------------------------------ run_check: the sequence every app's monitor runs


def test_run_check_from_a_model_dir_lists_every_alert_in_markdown_and_json(profile, tmp_path):
    model_dir = tmp_path / "model"
    profile.save(model_dir / REFERENCE_FILE)
    cur = _frame(2000, 11)
    cur["x"] += 1.0
    perf = performance_over_time(
        pd.DataFrame({"t": np.repeat([0, 1, 2], 50), "y": np.tile([0, 1], 75), "s": np.linspace(0, 1, 150)}),
        time_col="t",
        label_col="y",
        score_col="s",
        freq=1,
        metrics={"mean_score": lambda y, s: float(s.mean())},
    )
    extra = ["new-user rate 40.0% > 25%", "coverage 0.010 < 50% of reference 0.300"]
    v = run_check(
        model_dir,
        cur,
        tmp_path / "out",
        title="App drift",
        extra_alerts=extra,
        stats={"new_user_rate": 0.4},
        performance=perf,
        warnings=["history shorter than 30 days"],
        model_version="3",
    )

    direct = detect_drift(profile, cur)  # the verdict of the steps done by hand
    assert v.drift == direct.drift is True and v.drifted_features == direct.drifted_features == ["x"]
    assert v.alerts == [*extra, "distribution drift: 1 of 4 features drifted (x)"] and v.exit_code == 1
    md = (tmp_path / "out" / "drift.md").read_text()
    assert "## Alerts (3)" in md and all(f"- {a}" in md for a in v.alerts)
    assert "| new_user_rate | 0.4000 |" in md and "> Warning: history shorter than 30 days" in md
    assert "![Performance over time](performance.png)" in md
    assert (tmp_path / "out" / "performance.png").read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((tmp_path / "out" / "monitor.json").read_text())
    assert saved["alerts"] == v.alerts and saved["exit_code"] == 1 and saved["model_version"] == "3"
    assert saved["drift"]["drifted_features"] == ["x"] and len(saved["performance"]) == 3


def test_run_check_without_alerts_exits_zero_and_says_so(profile, tmp_path):
    v = run_check(profile, _frame(2000, 12), tmp_path / "out")
    assert v.alerts == [] and v.exit_code == 0 and not v.drift
    md = (tmp_path / "out" / "drift.md").read_text()
    assert "## Alerts (0)" in md and "None: no threshold was crossed." in md
    assert "Performance over time" not in md and not (tmp_path / "out" / "performance.png").exists()


def test_run_check_needs_the_reference_profile(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError, match="registered without a monitoring reference profile"):
        run_check(tmp_path / "model", _frame(10, 0))


def test_drift_report_save_lists_its_drift_alert_by_default(profile, tmp_path):
    cur = _frame(2000, 13)
    cur["x"] += 1.0
    md = detect_drift(profile, cur).save(tmp_path / "d").read_text()
    assert "## Alerts (1)" in md and "- distribution drift: 1 of 4 features drifted (x)" in md
