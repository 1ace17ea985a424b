"""The out-of-core path (apps/fraud/outofcore.py) gives the in-memory path's features, window and scores.

One in-process Dask cluster (threads, no worker processes: it starts in about a second) for the module, on a small
streamed file of 7-day row groups.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from apps.fraud.config import TINY_SIMULATION, FraudConfig, load_config
from apps.fraud.data import CUSTOMER, DAY, LABEL, TERMINAL, TX_ID, load
from apps.fraud.features import feature_names
from apps.fraud.outofcore import (
    Partitions,
    check_fits,
    features_dask,
    holdout_from_features,
    load_features,
    memory_needed,
    partition_features,
    rows_in,
    score_dask,
    train_from_features,
)
from apps.fraud.service import BatchScorer
from apps.fraud.synth import FILE, write_synthetic
from apps.fraud.train import prepare, train_model
from common import batch as common_batch
from common.data import DataError
from common.errors import UserError
from common.scaling import GIB, MemoryRefused

WORLD = replace(TINY_SIMULATION, n_customers=200, n_terminals=400, n_days=63)
IDS = (TX_ID, CUSTOMER, TERMINAL)
EXACT = [n for n in feature_names() if "nb_tx" in n or "risk" in n or n in ("is_weekend", "is_night")]


def _params() -> dict:
    return {**FraudConfig().xgb.params(), "n_estimators": 30}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(WORLD, out, chunk_days=7)
    return out / FILE


@pytest.fixture(scope="module")
def in_memory(source) -> pd.DataFrame:
    return prepare(load(source))


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl,
        distributed.Client(cl) as c,
    ):
        yield c


def _ids_as_str(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(**{c: df[c].astype(str) for c in IDS if c in df.columns})


def test_partition_features_equal_in_memory_features(source, in_memory) -> None:
    parts = Partitions.of(source)
    assert len(parts) == 9  # 63 days / 7
    dask_like = pd.concat([partition_features(parts, i, FraudConfig().features) for i in range(len(parts))])
    assert list(dask_like.columns) == list(in_memory.columns)
    pd.testing.assert_index_equal(dask_like.index, in_memory.index)
    pd.testing.assert_frame_equal(dask_like[EXACT], in_memory[EXACT], check_exact=True)  # counts, risks, flags
    pd.testing.assert_frame_equal(dask_like, in_memory, check_exact=False, rtol=1e-9)  # sums: float rounding


def test_dask_features_equal_in_memory_features(source, in_memory, client, tmp_path) -> None:
    res = features_dask(source, tmp_path / "features", client=client)
    assert res["rows"] == len(in_memory) and res["partitions"] == 9
    got = _ids_as_str(load_features(tmp_path / "features"))
    pd.testing.assert_frame_equal(got, _ids_as_str(in_memory), check_exact=False, rtol=1e-9)
    assert not list(tmp_path.glob(".features*"))  # the temporary directory is gone
    # only the requested days come back
    recent = load_features(tmp_path / "features", since_day=50)
    assert recent[DAY].min() == 51 and len(recent) == (in_memory[DAY] > 50).sum()


def test_training_from_partitions_uses_the_in_memory_window(source, in_memory, client, tmp_path) -> None:
    cfg = FraudConfig()
    features_dask(source, tmp_path / "features", client=client)
    dist = train_from_features(tmp_path / "features", cfg, client=client, params=_params())
    single = train_model(in_memory, cfg, params=_params(), train_days=cfg.train_days)
    for k in ("train_days", "train_rows", "train_frauds", "alerts_per_day"):
        assert dist.info[k] == single.info[k], k
    assert dist.info["distributed"]["backend"] == "xgboost.dask" and dist.features == single.features
    test = in_memory[in_memory[DAY] > in_memory[DAY].max() - cfg.features.delay_days]
    corr = np.corrcoef(single.predict_proba(test), dist.predict_proba(test))[0, 1]
    assert corr > 0.95, corr  # the same data and parameters (only xgboost.dask's bins and sampling differ)


def test_holdout_fold_scores_the_last_days_with_a_model_that_never_saw_them(
    source, in_memory, client, tmp_path
) -> None:
    """--engine dask has no prequential folds (they need the history in memory); its one held-out fold trains on
    the protocol's training days before the delay and scores every labelled row of the last test days."""
    cfg = FraudConfig()
    p = cfg.protocol
    features_dask(source, tmp_path / "features", client=client)
    held = holdout_from_features(tmp_path / "features", cfg, client=client, params=_params())
    last = int(in_memory[DAY].max())
    assert held["test_days"] == [last - p.delta_test + 1, last]
    assert held["train_days"][1] == last - p.delta_test - p.delta_delay  # the delay separates train from test
    test = in_memory[in_memory[DAY] > last - p.delta_test]
    assert held["n_test"] == len(test) and held["n_test_frauds"] == int(test[LABEL].sum())
    m = held["metrics"]
    assert m["roc_auc"] > 0.7, m  # a model that learnt nothing scores ~0.5
    assert 0 < m["average_precision"] <= 1 and 0 <= m[f"card_precision@{p.top_k}"] <= 1


def test_dask_batch_scores_equal_single_process_scores(source, tiny_model, client, tmp_path) -> None:
    cfg = FraudConfig().features
    res = score_dask(source, tmp_path / "dask.parquet", tiny_model, client=client, cfg=cfg)
    common_batch.score_file(
        source, tmp_path / "one.parquet", BatchScorer(tiny_model, cfg, None), chunksize=3_000, progress=False
    )
    dask, one = pd.read_parquet(tmp_path / "dask.parquet"), pd.read_parquet(tmp_path / "one.parquet")
    assert res["rows"] == len(one) and res["chunks"] == 9
    pd.testing.assert_frame_equal(_ids_as_str(dask), _ids_as_str(one), check_exact=False, rtol=1e-6)
    assert (dask["decision"] == "alert").any()


def test_dask_batch_scores_with_history_before_the_file(source, tiny_model, client, tmp_path) -> None:
    """A file of the later weeks, its features fed by earlier transactions (batch --history)."""
    cfg = FraudConfig().features
    raw = load(source)
    cut = raw["timestamp"].min() + pd.Timedelta(days=35)
    history, later = raw[raw["timestamp"] < cut], raw[raw["timestamp"] >= cut]
    path = tmp_path / "later.parquet"
    pq.write_table(pa.Table.from_pandas(later, preserve_index=False), path, row_group_size=len(later) // 3 + 1)
    score_dask(path, tmp_path / "dask.parquet", tiny_model, client=client, cfg=cfg, history=history)
    common_batch.score_file(
        path, tmp_path / "one.parquet", BatchScorer(tiny_model, cfg, history), progress=False, chunksize=2_000
    )
    dask, one = pd.read_parquet(tmp_path / "dask.parquet"), pd.read_parquet(tmp_path / "one.parquet")
    pd.testing.assert_frame_equal(_ids_as_str(dask), _ids_as_str(one), check_exact=False, rtol=1e-6)


def test_unsorted_partitions_are_refused(source, tmp_path) -> None:
    pf = pq.ParquetFile(source)
    path = tmp_path / "unsorted.parquet"
    with pq.ParquetWriter(path, pf.schema_arrow) as w:
        w.write_table(pf.read_row_group(1))
        w.write_table(pf.read_row_group(0))
    with pytest.raises(DataError, match=r"row group 1 starts at .* sorted by timestamp"):
        Partitions.of(path)
    with pytest.raises(DataError, match="one parquet file"):
        Partitions.of(tmp_path / "x.csv")


def test_memory_guard_refuses_with_the_memory_it_needs() -> None:
    need = memory_needed(18_000_000)
    with pytest.raises(MemoryRefused, match=r"needs about 19\.7 GiB for 18,000,000 transactions .* only 8\.0 GiB"):
        check_fits(18_000_000, available=8 * GIB)
    with pytest.raises(MemoryRefused, match="--engine dask"):
        check_fits(18_000_000, available=8 * GIB)
    assert check_fits(180_000, available=8 * GIB) == memory_needed(180_000) < need


def test_rows_in_reads_no_data(source, tmp_path) -> None:
    n = pq.ParquetFile(source).metadata.num_rows
    assert rows_in(source) == n
    csv = tmp_path / "t.csv"
    pd.read_parquet(source).head(123).to_csv(csv, index=False)
    assert rows_in(csv) == 123


def test_cli_refuses_a_file_that_will_not_fit(source, monkeypatch) -> None:
    from typer.testing import CliRunner

    from apps.fraud import outofcore
    from apps.fraud.__main__ import app

    monkeypatch.setattr(outofcore, "available_memory", lambda: 1 * 2**20)
    res = CliRunner().invoke(app, ["train", "--dataset", str(source), "--n-estimators", "10"])
    # a UserError: common.cli.run prints it as one `error:` line with exit code 2 (tests/common/test_cli_contract.py)
    assert isinstance(res.exception, MemoryRefused) and isinstance(res.exception, UserError), res.output
    msg = str(res.exception)
    assert re.search(r"needs about \d+ MiB for [\d,]+ transactions .* only 1 MiB is available", msg), msg
    assert "--engine dask" in msg


def test_cli_train_and_batch_on_dask(source, client, tmp_path) -> None:
    """train --engine dask registers a model on the first weeks; batch --scheduler scores the later weeks' row
    groups (features fed by the model's recorded history) like the single-process batch."""
    from typer.testing import CliRunner

    from apps.fraud.__main__ import app

    table = pq.read_table(source)
    cut = pd.Timestamp(WORLD.start_date) + pd.Timedelta(days=42)
    early, later = tmp_path / "early.parquet", tmp_path / "later.parquet"
    for path, rows in ((early, pc.less(table["timestamp"], cut)), (later, pc.greater_equal(table["timestamp"], cut))):
        part = table.filter(rows)
        pq.write_table(part, path, row_group_size=part.num_rows // 3 + 1)
    address = client.scheduler.address
    args = ["train", "--engine", "dask", "--dataset", str(early), "--n-estimators", "20"]
    res = CliRunner().invoke(app, [*args, "--scheduler", address])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert out["engine"] == "dask" and out["distributed"]["backend"] == "xgboost.dask"
    assert out["holdout"]["metrics"]["roc_auc"] > 0.5 and out["holdout"]["n_test"] > 0  # a held-out fold, measured
    one, dask = tmp_path / "one.parquet", tmp_path / "dask.parquet"
    assert CliRunner().invoke(app, ["batch", "-i", str(later), "-o", str(one)]).exit_code == 0
    res = CliRunner().invoke(app, ["batch", "-i", str(later), "-o", str(dask), "--scheduler", address])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(
        _ids_as_str(pd.read_parquet(dask)), _ids_as_str(pd.read_parquet(one)), check_exact=False, rtol=1e-6
    )
    bad = CliRunner().invoke(app, ["train", "--engine", "spark", "--dataset", str(source)])
    assert isinstance(bad.exception, UserError)  # exit code 2 through common.cli.run
    assert str(bad.exception) == "engine: 'spark' is not one of pandas, dask"


def test_engine_is_checked() -> None:
    assert load_config(values={"engine": "dask"}).engine == "dask"
    with pytest.raises(DataError, match="engine: only the xgboost model"):
        load_config(values={"engine": "dask", "model": "logreg"})
