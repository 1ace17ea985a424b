"""The out-of-core path: features, training and batch scoring over the partitions of a time-sorted parquet file, on
a Dask cluster, with the in-memory path's results (``--engine dask``).

A partition is a parquet row group (:mod:`apps.fraud.synth` writes one per block of days; write your own file with
row groups of a few days, sorted by timestamp). The features of a transaction read the windows before it (the
card's last 30 days, the terminal's 37 days up to the label delay), which cross partition boundaries, so each
partition's task reads the rows of the earlier partitions within ``FeatureConfig.history_days`` of its first row
(the "halo") and computes :func:`apps.fraud.features.compute_features` on halo + partition, featurising only the
partition. The result equals the in-memory path's (counts and risks exactly, sums of amounts to float rounding:
``tests/fraud/test_outofcore.py``). Cost: each partition also sorts its halo, so partitions of a few weeks keep
that overhead small; memory per worker: halo + partition, never the whole file.

- :func:`features_dask`: transactions -> ``DIR/part-NNNNN.parquet``, :func:`apps.fraud.train.prepare`'s columns;
- :func:`train_from_features`: the latest labelled ``train_days`` of those parts (``dask.dataframe``) fitted by
  ``xgboost.dask``; the alert threshold from the window's scores (two columns come back to the client, not rows);
- :func:`score_dask`: transactions -> one parquet file of ``tx_id, score, decision[, label]``, what ``batch``
  writes (:class:`apps.fraud.service.BatchScorer` on halo + partition).

The in-memory path refuses what will not fit (:func:`check_fits`): the estimate is rows x columns x 8 bytes x the
working copies :data:`WORKING_COPIES` measured in ``bench/results/fraud-scale.json``, against the memory available.

On a cluster: pass ``scheduler="tcp://host:8786"`` (``--scheduler``); the parquet file and the output directory
must be on storage every worker reads (a shared file system; ``s3://`` needs ``s3fs`` and is not tested here).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from apps.fraud.config import FeatureConfig, FraudConfig, SimulationConfig
from apps.fraud.data import AMOUNT, CUSTOMER, DAY, LABEL, SCHEMA, TERMINAL, TIMESTAMP, TX_ID, add_day, validate
from apps.fraud.features import compute_features, feature_names, to_seconds
from apps.fraud.model import FraudModel
from common.data import SECONDS_PER_DAY, DataError, atomic_path
from common.scaling import MemoryRefused, available_memory, human_bytes

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ the in-memory path's memory guard

# columns of the prepared frame (7 of the transactions, day, 21 more features: 29) and the copies of it the
# in-memory path holds at its peak (read, validation with ids as strings, feature arrays, the concatenation):
# load + prepare peaked at 1,079 bytes a transaction at 1.8M rows, 4.65 x 29 x 8 (bench/results/fraud-scale.json,
# features/pandas); 5 copies leave a margin
PREPARED_COLUMNS = len(dict.fromkeys([*SCHEMA.names, DAY, *feature_names()]))
WORKING_COPIES = 5.0
# the interpreter with pandas, pyarrow and xgboost loaded, whatever the rows (0.38 GiB measured at 169k rows)
BASE_BYTES = 300 * 2**20


def memory_needed(rows: int, *, columns: int = PREPARED_COLUMNS, copies: float = WORKING_COPIES) -> int:
    """Bytes the in-memory path needs for ``rows`` transactions: rows x columns x 8 bytes x working copies, plus
    the interpreter's :data:`BASE_BYTES`."""
    return int(rows * columns * 8 * copies) + BASE_BYTES


def check_fits(rows: int, *, what: str = "transactions", available: int | None = None) -> int:
    """Raise :class:`MemoryRefused` when ``rows`` transactions will not fit in memory; returns the estimate."""
    need = memory_needed(rows)
    avail = available_memory() if available is None else available
    if need > avail:
        raise MemoryRefused(
            f"{what}: the in-memory path needs about {human_bytes(need)} for {rows:,} transactions ({rows:,} rows "
            f"x {PREPARED_COLUMNS} columns x 8 bytes x {WORKING_COPIES:g} working copies + the interpreter), but only "
            f"{human_bytes(avail)} is available; use the out-of-core path instead: --engine dask with a parquet "
            f"--dataset (features, training and scoring over its partitions on a Dask cluster, --scheduler)"
        )
    return need


def rows_in(path: str | Path) -> int:
    """Transactions in a file, without reading it: parquet metadata, or a CSV's lines (minus the header)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq") or path.is_dir():
        return pq.ParquetDataset(str(path)).count_rows() if path.is_dir() else pq.ParquetFile(path).metadata.num_rows
    opener: Any = open
    if path.name.endswith(".gz"):
        import gzip

        opener = gzip.open
    n = 0
    with opener(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            n += block.count(b"\n")
    return max(n - 1, 0)


def expected_rows(sim: SimulationConfig) -> int:
    """About how many transactions the simulator makes for ``sim`` (2 a day per customer, 97 % inside the day)."""
    return int(sim.n_customers * sim.n_days * 2 * 0.97)


# ------------------------------------------------------------------ partitions


@dataclass(frozen=True)
class Partitions:
    """The row groups of a time-sorted parquet file: rows, first/last epoch seconds, whether labels are complete."""

    path: str
    rows: tuple[int, ...]
    first: tuple[int, ...]
    last: tuple[int, ...]
    labels_complete: bool

    @classmethod
    def of(cls, path: str | Path) -> Partitions:
        """Read the row groups' sizes and time ranges; :class:`DataError` when the file is not a time-sorted
        parquet file with the app's columns."""
        path = Path(path)
        if not path.is_file() or path.suffix.lower() not in (".parquet", ".pq"):
            raise DataError(f"{path}: the out-of-core path reads one parquet file (.parquet); convert CSV first")
        pf = pq.ParquetFile(path)
        missing = [c.name for c in SCHEMA.columns if c.required and c.name not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; expected {SCHEMA.header}")
        rows, first, last, complete = [], [], [], True
        has_label = LABEL in pf.schema_arrow.names
        for i in range(pf.num_row_groups):
            cols = [TIMESTAMP, LABEL] if has_label else [TIMESTAMP]
            t = pf.read_row_group(i, columns=cols).to_pandas()
            if not len(t):
                continue
            s = to_seconds(pd.to_datetime(t[TIMESTAMP]))
            rows.append(len(t))
            first.append(int(s.min()))
            last.append(int(s.max()))
            complete = complete and has_label and not t[LABEL].isna().any()
            if len(first) > 1 and first[-1] < last[-2]:
                raise DataError(
                    f"{path}: row group {i} starts at {pd.Timestamp(first[-1], unit='s')}, before the end of the "
                    f"previous one ({pd.Timestamp(last[-2], unit='s')}): the out-of-core path needs a file sorted "
                    f"by {TIMESTAMP} (python -m apps.fraud.synth writes one)"
                )
        if not rows:
            raise DataError(f"{path}: no transactions")
        return cls(str(path), tuple(rows), tuple(first), tuple(last), complete)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def offsets(self) -> np.ndarray:
        """Row number of each partition's first row in the whole file."""
        return np.r_[0, np.cumsum(self.rows)][:-1]

    @property
    def origin(self) -> pd.Timestamp:
        """Midnight of the data's first day (:data:`~apps.fraud.data.DAY` 0)."""
        return pd.Timestamp(self.first[0], unit="s").normalize()

    def halo(self, i: int, days: int) -> list[int]:
        """The earlier partitions holding rows within ``days`` before partition ``i``'s first row."""
        since = self.first[i] - days * SECONDS_PER_DAY
        return [j for j in range(i) if self.last[j] > since]


FEATURE_INPUT = (TIMESTAMP, CUSTOMER, TERMINAL, AMOUNT, LABEL)  # what the features read of a transaction


def raw_partition(parts: Partitions, i: int, *, since: int | None = None, columns: tuple[str, ...] | None = None):
    """Row group ``i`` as stored (rows after epoch second ``since`` only), in time order (stable: the order
    :func:`~apps.fraud.data.validate` gives)."""
    pf = pq.ParquetFile(parts.path)
    df = pf.read_row_group(i, columns=[c for c in columns or SCHEMA.names if c in pf.schema_arrow.names]).to_pandas()
    if not pd.api.types.is_datetime64_any_dtype(df[TIMESTAMP]):
        df[TIMESTAMP] = pd.to_datetime(df[TIMESTAMP])
    if since is not None:
        df = df[to_seconds(df[TIMESTAMP]) > since]
    return df.sort_values(TIMESTAMP, kind="mergesort").reset_index(drop=True)


def load_partition(parts: Partitions, i: int, raw: pd.DataFrame | None = None) -> pd.DataFrame:
    """Partition ``i`` (``raw``: as :func:`raw_partition` read it) validated like the in-memory path's file (ids
    as strings, one label dtype per file)."""
    raw = raw_partition(parts, i) if raw is None else raw
    df = validate(raw, source=f"{parts.path} row group {i}", require_label=False)
    if LABEL in df.columns:  # one dtype in every partition: the whole file's (int64 when no label is missing)
        df[LABEL] = df[LABEL].astype("int64" if parts.labels_complete else "float64")
    return df


def halo(parts: Partitions, i: int, days: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """The transactions within ``days`` before partition ``i``'s first row (``history``'s rows before the file's
    first row, then the earlier partitions'), as stored: only :data:`FEATURE_INPUT` and ``tx_id``, not validated
    again (each partition is validated by its own task) and ids not converted to strings (the costly part of
    validation)."""
    since = parts.first[i] - days * SECONDS_PER_DAY
    pieces = []
    if history is not None and len(history):  # the transactions before the file (the file holds the others)
        t = to_seconds(pd.to_datetime(history[TIMESTAMP]))
        pieces.append(history[(t > since) & (t < parts.first[0])].sort_values(TIMESTAMP, kind="mergesort"))
    cols = (TX_ID, *FEATURE_INPUT)
    pieces += [raw_partition(parts, j, since=since, columns=cols) for j in parts.halo(i, days)]
    pieces = [p[[c for c in cols if c in p.columns]] for p in pieces if len(p)]
    return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=list(cols))


# ------------------------------------------------------------------ features


def partition_features(parts: Partitions, i: int, cfg: FeatureConfig) -> pd.DataFrame:
    """:func:`apps.fraud.train.prepare`'s rows of partition ``i`` (index: their row numbers in the file).

    The features are computed on the stored ids (integers stay integers: the same grouping as their strings,
    :func:`~apps.fraud.data.id_key`); the rows returned are the validated ones."""
    raw = raw_partition(parts, i)
    part = load_partition(parts, i, raw)
    inputs = part[[c for c in FEATURE_INPUT if c in part.columns]].copy()
    for c in (CUSTOMER, TERMINAL):
        if raw[c].dtype.kind in "iu":
            inputs[c] = raw[c].to_numpy()
    before = halo(parts, i, cfg.history_days)
    before = before[[c for c in inputs.columns if c in before.columns]]
    df = pd.concat([before, inputs], ignore_index=True) if len(before) else inputs
    feats = compute_features(df, cfg, start=len(before))
    rows = add_day(part, parts.origin)
    out = pd.concat(
        [rows.drop(columns=[c for c in feats.columns if c in rows.columns]), feats.set_axis(rows.index)], axis=1
    )
    out.index = pd.RangeIndex(int(parts.offsets[i]), int(parts.offsets[i]) + len(out))
    return out


def _write_features(parts: Partitions, i: int, cfg: FeatureConfig, out_dir: str) -> int:
    frame = partition_features(parts, i, cfg)
    frame.to_parquet(Path(out_dir) / f"part-{i:05d}.parquet", index=False)
    return len(frame)


def _wait_in_order(futures: list, what: str) -> list:
    """Results of ``futures`` (in order), logging progress as they complete."""
    from distributed import as_completed

    t0 = time.perf_counter()
    for done, _ in enumerate(as_completed(futures), start=1):
        if done == len(futures) or done % max(1, len(futures) // 10) == 0:
            log.info("%s: %d/%d partitions (%.0fs)", what, done, len(futures), time.perf_counter() - t0)
    return [f.result() for f in futures]


def features_dask(
    source: str | Path, out_dir: str | Path, cfg: FeatureConfig | None = None, *, client: Any
) -> dict[str, Any]:
    """Features of every transaction of ``source`` (a time-sorted parquet file) into ``out_dir/part-*.parquet``,
    one task per partition on ``client``'s cluster; ``out_dir`` is replaced only when every part is written."""
    cfg = cfg or FeatureConfig()
    parts = Partitions.of(source)
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        futures = [client.submit(_write_features, parts, i, cfg, str(tmp), pure=False) for i in range(len(parts))]
        rows = sum(_wait_in_order(futures, f"features of {Path(source).name}"))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    log.info("features: %d rows in %d partitions -> %s (%.1fs)", rows, len(parts), out, seconds)
    return {"rows": rows, "partitions": len(parts), "seconds": round(seconds, 2), "output": str(out)}


def read_features(features_dir: str | Path, columns: list[str] | None = None, filters: list | None = None):
    """The feature parts as a ``dask.dataframe`` (one partition per part, in time order; ``filters``: pyarrow's)."""
    import dask.dataframe as dd

    return dd.read_parquet(str(features_dir), columns=columns, filters=filters)


def load_features(features_dir: str | Path, *, since_day: int | None = None) -> pd.DataFrame:
    """The feature parts in memory (``since_day``: only the days after it), index = row number."""
    filters = [(DAY, ">", since_day)] if since_day is not None else None
    return pd.read_parquet(features_dir, filters=filters).reset_index(drop=True)


# ------------------------------------------------------------------ training


def train_from_features(
    features_dir: str | Path,
    cfg: FraudConfig,
    *,
    client: Any,
    params: dict[str, Any] | None = None,
    train_days: int | None = None,
    end_day: int | None = None,
    seed: int = 0,
) -> FraudModel:
    """:func:`apps.fraud.train.train_model_dask` from the feature parts: the latest labelled ``train_days``
    (default ``cfg.train_days``) ending ``delay_days`` before the last day (or on ``end_day``), read as a
    ``dask.dataframe`` and fitted by ``xgboost.dask``; the same window and threshold rule as
    :func:`apps.fraud.train.train_model`."""
    from apps.fraud.train import finish_scored, fit_dask_booster

    features = feature_names(cfg.features)
    train_days = train_days or cfg.train_days
    if end_day is None:
        end = int(client.compute(read_features(features_dir, [DAY])[DAY].max(), sync=True)) - cfg.features.delay_days
    else:
        end = end_day
    # only the window's rows are read (parquet filters), never the whole history
    ddf = read_features(features_dir, [DAY, LABEL, *features], filters=[(DAY, ">", end - train_days), (DAY, "<=", end)])
    window = ddf[~ddf[LABEL].isna()]
    n, frauds = (int(v) for v in client.compute([window[LABEL].count(), window[LABEL].sum()], sync=True))
    if n == 0 or frauds in (0, n):
        what = "no labelled rows" if n == 0 else f"only label {int(frauds > 0)}"
        raise DataError(
            f"the latest {train_days} labelled days have {what}: a model needs frauds and genuine transactions "
            f"to learn from (use more days: --train-days, or a file with both labels)"
        )
    X = window[features].astype(np.float32)
    y = window[LABEL].astype(np.float32)
    t0 = time.perf_counter()
    booster, info = fit_dask_booster(client, X, y, features, params or cfg.xgb.params(), seed=seed)
    fit_s = time.perf_counter() - t0
    model = FraudModel(kind="xgboost", features=features, estimator=booster, params=dict(params or cfg.xgb.params()))
    scored = window[[DAY, LABEL]].assign(score=window[features].map_partitions(_predict, model, meta=("score", "f8")))
    day_label_score = scored.compute()
    model = finish_scored(
        model,
        day_label_score[DAY].to_numpy(),
        day_label_score[LABEL].to_numpy(),
        day_label_score["score"].to_numpy(),
        cfg,
        fit_s,
    )
    model.info["distributed"] = info | {"source": str(features_dir)}
    return model


def holdout_from_features(
    features_dir: str | Path, cfg: FraudConfig, *, client: Any, params: dict[str, Any] | None = None, seed: int = 0
) -> dict[str, Any]:
    """What the out-of-core path has instead of the prequential validation folds (they need the history in
    memory): one fold of the protocol's shape at the end of the data. A model trained on the ``delta_train``
    labelled days that end ``delta_delay`` days before the last ``delta_test`` days scores those last days; AUC,
    AP and card precision@k of the scores (:func:`apps.fraud.evaluate.score_metrics`; four columns of the test
    days come back to the client, never the history). Returns the metrics and the fold's days and sizes."""
    from apps.fraud.evaluate import score_metrics

    p = cfg.protocol
    last = int(client.compute(read_features(features_dir, [DAY])[DAY].max(), sync=True))
    test_start = last - p.delta_test + 1
    train_end = test_start - p.delta_delay - 1
    model = train_from_features(
        features_dir, cfg, client=client, params=params, train_days=p.delta_train, end_day=train_end, seed=seed
    )
    ddf = read_features(features_dir, [DAY, LABEL, CUSTOMER, *model.features], filters=[(DAY, ">=", test_start)])
    ddf = ddf[~ddf[LABEL].isna()]
    scored = ddf[[DAY, LABEL, CUSTOMER]].assign(
        score=ddf[model.features].map_partitions(_predict, model, meta=("score", "f8"))
    )
    test = scored.compute()
    if test.empty:
        raise DataError(f"no labelled transactions in the last {p.delta_test} days to hold out")
    metrics = score_metrics(test, test["score"].to_numpy(), p.top_k)
    return {
        "metrics": {k: round(float(v), 6) for k, v in metrics.items()},
        "train_days": model.info["train_days"],
        "test_days": [test_start, last],
        "n_train": model.info["train_rows"],
        "n_test": len(test),
        "n_test_frauds": int(test[LABEL].sum()),
    }


def _predict(X: pd.DataFrame, model: FraudModel) -> pd.Series:
    return pd.Series(model.predict_proba(X), index=X.index, name="score")


# ------------------------------------------------------------------ batch scoring


def _score_partition(
    parts: Partitions, i: int, model: FraudModel, cfg: FeatureConfig, history: pd.DataFrame | None
) -> pd.DataFrame:
    from apps.fraud.service import BatchScorer

    before = halo(parts, i, cfg.history_days, history)
    out = BatchScorer(model, cfg, before if len(before) else None)(raw_partition(parts, i))
    if LABEL in out.columns:  # one dtype in every partition (the output file has one schema)
        out[LABEL] = out[LABEL].astype("int64" if parts.labels_complete else "float64")
    return out


def score_dask(
    source: str | Path,
    output: str | Path,
    model: FraudModel,
    *,
    client: Any,
    cfg: FeatureConfig | None = None,
    history: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """``batch`` over the partitions of ``source`` on ``client``'s cluster: one parquet file of ``tx_id, score,
    decision[, label]`` in the input's order (written atomically), each partition's features seeing its halo and,
    before the file's first row, ``history``."""
    cfg = cfg or FeatureConfig()
    parts = Partitions.of(source)
    t0 = time.perf_counter()
    model_f = client.scatter(model, broadcast=True, hash=False)
    hist_f = client.scatter(history, broadcast=True, hash=False) if history is not None else None
    futures = [client.submit(_score_partition, parts, i, model_f, cfg, hist_f, pure=False) for i in range(len(parts))]
    rows, schema = 0, None
    with atomic_path(output) as tmp:
        writer = None
        try:
            for i, fut in enumerate(futures):
                table = pa.Table.from_pandas(fut.result(), preserve_index=False)
                fut.release()
                schema = schema or table.schema
                writer = writer or pq.ParquetWriter(tmp, schema)
                writer.write_table(table.cast(schema))
                rows += table.num_rows
                log.info("scored partition %d/%d (%d rows, %.0fs)", i + 1, len(parts), rows, time.perf_counter() - t0)
        except BaseException:
            client.cancel(futures)
            raise
        finally:
            if writer is not None:
                writer.close()
    seconds = time.perf_counter() - t0
    log.info("scored %s -> %s on dask: %d rows in %d partitions, %.1fs", source, output, rows, len(parts), seconds)
    return {"rows": rows, "chunks": len(parts), "seconds": round(seconds, 2), "output": str(output)}
