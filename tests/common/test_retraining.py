"""common.retraining: the promotion rule, champion vs challenger, and the decision record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import registry, retraining


def test_decide_rule() -> None:
    assert retraining.decide(0.80, 0.81, margin=0.005)[0] is True
    assert retraining.decide(0.80, 0.804, margin=0.005)[0] is False  # better, but not by the margin
    assert retraining.decide(0.80, 0.79)[0] is False
    assert retraining.decide(20.0, 18.0, higher_is_better=False)[0] is True  # e.g. RMSE
    assert retraining.decide(None, 0.5)[0] is True
    assert retraining.decide(0.8, float("nan"))[0] is False


def _register(tmp_path: Path, score: float, alias: str | None = None) -> registry.ModelVersion:
    d = tmp_path / f"m{score}"
    d.mkdir()
    (d / "score.json").write_text(json.dumps(score))
    return registry.register("toy", d, alias=alias)


def _evaluate(mv: registry.ModelVersion) -> float:
    model, _ = registry.load("toy", mv.version, lambda p: json.loads((p / "score.json").read_text()))
    return model


def test_challenger_that_wins_is_promoted_and_recorded(tmp_path: Path, mlref_home: Path) -> None:
    champ = _register(tmp_path, 0.70, alias="champion")
    chall = _register(tmp_path, 0.75)
    d = retraining.champion_vs_challenger("toy", chall, _evaluate, metric="ap", margin=0.01)
    assert d.promoted and d.champion_version == champ.version and d.challenger_score == pytest.approx(0.75)
    assert registry.get("toy").version == chall.version
    logged = [json.loads(x) for x in (mlref_home / "decisions" / "toy.jsonl").read_text().splitlines()]
    assert logged[-1]["promoted"] is True and logged[-1]["champion_score"] == pytest.approx(0.70)
    runs = retraining.tracking.client().search_runs([retraining.tracking.experiment_id("toy-retraining")])
    assert runs[0].data.metrics["promoted"] == 1.0


def test_challenger_that_loses_is_kept_as_challenger(tmp_path: Path) -> None:
    champ = _register(tmp_path, 0.70, alias="champion")
    chall = _register(tmp_path, 0.705)
    d = retraining.champion_vs_challenger("toy", chall, _evaluate, metric="ap", margin=0.01)
    assert not d.promoted and "does not exceed margin" in d.reason
    assert registry.get("toy").version == champ.version
    assert registry.get("toy", "challenger").version == chall.version
    assert [x.promoted for x in retraining.history("toy")] == [False]


def test_first_model_becomes_champion(tmp_path: Path) -> None:
    first = _register(tmp_path, 0.5)
    assert retraining.champion_vs_challenger("toy", first, _evaluate, metric="ap").promoted
    assert registry.get("toy").version == first.version
    with pytest.raises(ValueError, match="already the champion"):
        retraining.champion_vs_challenger("toy", first, _evaluate, metric="ap")


# ------------------------------------------------------------------ fairness: neither model saw the window

WINDOW = 1_700_000_000.0  # unix seconds of the evaluation window's first row


def _tagged(tmp_path: Path, score: float, seen: float | None, alias: str | None = None) -> registry.ModelVersion:
    d = tmp_path / f"m{score}-{seen}"
    d.mkdir()
    (d / "score.json").write_text(json.dumps(score))
    return registry.register("toy", d, alias=alias, last_training_timestamp=seen)


def test_champion_trained_on_the_window_is_no_fair_comparison(tmp_path: Path) -> None:
    champ = _tagged(tmp_path, 0.10, seen=WINDOW + 3600, alias="champion")  # trained an hour into the window
    chall = _tagged(tmp_path, 0.90, seen=WINDOW - 1)
    calls: list[str] = []

    def evaluate(mv: registry.ModelVersion) -> float:
        calls.append(mv.version)
        return _evaluate(mv)

    d = retraining.champion_vs_challenger("toy", chall, evaluate, metric="ap", window_start=WINDOW)
    assert not d.promoted and calls == []  # not even scored: the numbers would mean nothing
    assert d.reason.startswith(f"no fair comparison: champion v{champ.version} saw data up to 2023-11-14T23:13:20Z")
    assert d.reason.endswith("bring newer labelled data") and ">= window start 2023-11-14T22:13:20Z" in d.reason
    assert registry.get("toy").version == champ.version
    assert retraining.history("toy")[-1].reason == d.reason and retraining.history("toy")[-1].window_start == WINDOW


def test_a_challenger_trained_on_the_window_or_an_untagged_champion_is_refused(tmp_path: Path) -> None:
    champ = _tagged(tmp_path, 0.10, seen=None, alias="champion")
    chall = _tagged(tmp_path, 0.90, seen=WINDOW)
    d = retraining.champion_vs_challenger("toy", chall, _evaluate, metric="ap", window_start=WINDOW)
    assert not d.promoted
    assert f"champion v{champ.version} has no last_training_timestamp tag" in d.reason
    assert f"challenger v{chall.version} saw data up to" in d.reason
    assert registry.get("toy").version == champ.version


def test_fair_comparison_promotes_the_refit_of_the_winner(tmp_path: Path) -> None:
    _tagged(tmp_path, 0.70, seen=WINDOW - 86_400, alias="champion")
    chall = _tagged(tmp_path, 0.75, seen=WINDOW - 1)
    refits: list[str] = []

    def refit(winner: registry.ModelVersion) -> registry.ModelVersion:
        refits.append(winner.version)
        return _tagged(tmp_path, 0.80, seen=WINDOW + 7 * 86_400)  # the same recipe on all data, window included

    d = retraining.champion_vs_challenger("toy", chall, _evaluate, metric="ap", window_start=WINDOW, refit=refit)
    assert d.promoted and refits == [chall.version] and d.challenger_version == chall.version
    assert registry.get("toy").version == d.promoted_version == "3"
    # the refit saw the window: the same comparison again is refused up front, nothing trained
    assert retraining.guard("toy", WINDOW, metric="ap").reason.startswith("no fair comparison: champion v3")
    assert retraining.guard("toy", WINDOW + 8 * 86_400, metric="ap") is None  # a newer window is fair again


def test_guard_records_the_refusal_before_anything_is_trained(tmp_path: Path) -> None:
    assert retraining.guard("toy", WINDOW, metric="ap") is None  # no champion: nothing to protect
    _tagged(tmp_path, 0.5, seen=WINDOW, alias="champion")
    d = retraining.guard("toy", WINDOW, metric="ap", margin=0.01)
    assert d is not None and not d.promoted and d.challenger_version == "" and d.margin == 0.01
    assert [x.reason for x in retraining.history("toy")] == [d.reason]


def test_unix_seconds_of_numbers_and_datetimes() -> None:
    import numpy as np
    import pandas as pd

    assert retraining.unix_seconds(1_700_000_000) == 1_700_000_000.0
    assert retraining.unix_seconds(pd.Timestamp("2023-11-14 22:13:20")) == WINDOW  # naive = UTC
    assert retraining.unix_seconds(np.datetime64("2023-11-14T22:13:20")) == WINDOW
    assert retraining.last_training_timestamp(pd.Series([3, 1, None, 2])) == 3.0
    with pytest.raises(ValueError, match="no training timestamps"):
        retraining.last_training_timestamp(pd.Series([], dtype=float))


# ------------------------------------------------------------------ concurrent retrains: compare-and-set


def test_two_concurrent_retrains_against_the_same_champion_promote_exactly_one(tmp_path: Path) -> None:
    import threading

    champ = _tagged(tmp_path, 0.50, seen=WINDOW - 10, alias="champion")
    a = _tagged(tmp_path, 0.60, seen=WINDOW - 5)
    b = _tagged(tmp_path, 0.70, seen=WINDOW - 5)
    both_scored = threading.Barrier(2, timeout=60)
    decisions: dict[str, retraining.Decision] = {}

    def evaluate(mv: registry.ModelVersion) -> float:
        score = _evaluate(mv)
        if mv.version == champ.version:  # both have compared against v1 before either promotes
            both_scored.wait()
        return score

    def run(chall: registry.ModelVersion) -> None:
        decisions[chall.version] = retraining.champion_vs_challenger(
            "toy", chall, evaluate, metric="ap", window_start=WINDOW
        )

    threads = [threading.Thread(target=run, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(decisions) == [a.version, b.version]
    assert all(d.champion_version == champ.version for d in decisions.values())
    winners = [v for v, d in decisions.items() if d.promoted]
    losers = [d for d in decisions.values() if not d.promoted]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].reason.startswith(
        f"{retraining.CHAMPION_CHANGED}: compared against v{champ.version} but v{winners[0]} became champion"
    )
    assert registry.get("toy").version == winners[0]
    assert sorted(d.promoted for d in retraining.history("toy")) == [False, True]


def test_two_concurrent_retrain_processes_promote_exactly_one(tmp_path: Path, mlref_home: Path) -> None:
    from mlref_testing.probe import faults

    champ = _tagged(tmp_path, 0.50, seen=WINDOW - 10, alias="champion")
    challengers = [_tagged(tmp_path, 0.60, seen=WINDOW - 5), _tagged(tmp_path, 0.70, seen=WINDOW - 5)]
    sync = tmp_path / "sync"
    sync.mkdir()
    cmds = []
    for mv in challengers:
        cmds.append(
            faults.script_cmd(
                tmp_path,
                f"""
import json, time
from pathlib import Path
from common import registry, retraining

sync = Path({str(sync)!r})

def evaluate(mv):
    score = json.loads((registry.fetch_model_dir(mv) / "score.json").read_text())
    if mv.version == {champ.version!r}:  # wait until the other process has scored the same champion
        (sync / "{mv.version}").touch()
        deadline = time.monotonic() + 60
        while len(list(sync.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    return score

d = retraining.champion_vs_challenger("toy", registry.get("toy", "{mv.version}"), evaluate, metric="ap",
                                      window_start={WINDOW})
print(json.dumps(d.to_dict()))
""",
                name=f"retrain_{mv.version}.py",
            )
        )
    results = faults.run_concurrently(cmds, timeout_s=120)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    decisions = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    assert all(d["champion_version"] == champ.version for d in decisions)
    assert sorted(d["promoted"] for d in decisions) == [False, True]
    loser = next(d for d in decisions if not d["promoted"])
    winner = next(d for d in decisions if d["promoted"])
    assert loser["reason"].startswith("champion changed, not promoted")
    assert registry.get("toy").version == winner["challenger_version"]
    assert len(retraining.history("toy")) == 2
