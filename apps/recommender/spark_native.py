"""The Spark-native training path: a parquet data set read, validated, indexed, split, fitted and evaluated in Spark.

``train --engine spark --dataset <parquet file | directory | glob | s3a://... | hdfs://...>`` takes this path
(:func:`is_parquet_source`); a CSV, the built-in data sets and in-memory frames keep the in-memory path
(:func:`apps.recommender.train.train_model` with :class:`~apps.recommender.model.SparkALS`).

What runs where:

- **in Spark** (executors; in local mode the driver's JVM): ``spark.read.parquet``, validation (one aggregation:
  null/blank ids, over-long ids, null/non-finite/non-positive weights, bad timestamps, counted per column and
  refused with one line like :class:`common.data.Schema`'s), the merge of repeated (user, item) pairs (weights
  summed, latest timestamp), the join with the dense id maps, the per-user 75/25 split, both ALS fits
  (:meth:`SparkALS.fit_frame <apps.recommender.model.SparkALS.fit_frame>`, the same parameter mapping as the
  in-memory Spark path), the item popularity and the data fingerprint.
- **on the driver** (Python): the distinct user and item ids (sorted; their position is the dense index), the
  factors (users + items x rank), the sampled test users' train and test rows (evaluated with the app's own
  :func:`~apps.recommender.evaluate.evaluate_bundle`), a 5,000-row reference sample for monitoring, and, for the
  served bundle only, its "seen" matrix (CSR: 8 bytes per interaction, collected a slice of users at a time). No
  frame of all interactions is ever built on the driver.

The split mirrors ``ms-stratified`` (:func:`apps.recommender.evaluate.stratified_split`): per user, rows are ordered
by a seeded random key and the first ``ratio`` of them (rank / count <= ratio) are training. A user with n >= 2
interactions therefore keeps >= 1 in train (1/n <= 1/2 <= ratio for ratio >= 0.5) and >= 1 in test (the last,
n/n > ratio); a user with one interaction is test-only and is not evaluated (counted in ``skipped_users``). The key
is ``xxhash64(seed, user, item)``, so the split does not depend on how the file is partitioned; it is a different
random draw from the in-memory split's numpy key, so the two paths' held-out numbers agree within noise, not
exactly.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from apps.recommender.config import RecommenderConfig
from apps.recommender.data import GENRES, ITEM, MAX_ID_LENGTH, SCHEMA, TIMESTAMP, TITLE, USER, WEIGHT
from apps.recommender.evaluate import evaluate_bundle
from apps.recommender.features import IdMap
from apps.recommender.model import RecommenderBundle, SparkALS, spark_session
from apps.recommender.train import TrainResult
from common.data import UNIX_TIME_MAX, DataError, read_table
from common.errors import ConfigError

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt")
EVAL_USERS = 5000  # test users sampled for the held-out metrics (their rows are collected to the driver)
REFERENCE_ROWS = 5000  # rows sampled for the monitoring reference profile
SEEN_CHUNK_ROWS = 5_000_000  # interactions collected per slice of users when the seen matrix is built
FLOAT32_MAX = float(np.finfo(np.float32).max)


def is_parquet_source(spec: str | Path | None) -> bool:
    """Whether ``spec`` names parquet data Spark should read: a ``.parquet``/``.pq`` file, a directory holding
    parquet files (a Spark or Hive output), a glob of parquet files, or a URI of shared storage (``s3a://``,
    ``hdfs://``, ``gs://``, ``abfss://`` ...) that is not a text file."""
    if spec is None:
        return False
    text = str(spec)
    lower = text.lower()
    if "://" in text:
        return not lower.endswith(TEXT_SUFFIXES)
    if any(c in text for c in "*?["):
        matches = globlib.glob(text)
        return bool(matches) and all(m.lower().endswith(PARQUET_SUFFIXES) or Path(m).is_dir() for m in matches)
    path = Path(text)
    if path.is_dir():
        return any(p.name.lower().endswith(PARQUET_SUFFIXES) for p in path.rglob("*"))
    return path.is_file() and lower.endswith(PARQUET_SUFFIXES)


@dataclass
class SparkInteractions:
    """A validated interactions data set that lives in Spark: ``frame`` has ``user``, ``item`` (str), ``weight``
    (float) and ``timestamp`` (long), one row per (user, item). What :meth:`RecommenderApp.load_data` returns for
    a parquet source with ``--engine spark``."""

    name: str
    source: str
    frame: Any  # pyspark.sql.DataFrame
    rows: int  # rows read (before repeated pairs were merged)
    items: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[TITLE, GENRES]))


def read_interactions(session: Any, source: str, *, name: str | None = None) -> SparkInteractions:
    """Read ``source`` with ``spark.read.parquet`` and validate it in Spark (see the module docstring).

    Raises:
        DataError: unreadable source, a missing column, no rows, or bad values (one line per problem, joined by
            ``; ``: the column, why, how many rows and up to 3 example values).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.utils import AnalysisException

    try:
        raw = session.read.parquet(source)
    except AnalysisException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{source}: could not read parquet: {first}") from exc
    missing = [c for c in (USER, ITEM) if c not in raw.columns]
    if missing:
        raise DataError(
            f"{source}: missing required column(s) {missing}; found {list(raw.columns)}; "
            f"expected a header {SCHEMA.header} (extra columns are allowed)"
        )
    ids = {c: F.col(c).cast("string") for c in (USER, ITEM)}
    checks: list[tuple[str, str, Any]] = []  # (column, why, condition on raw rows)
    for c, col in ids.items():
        checks.append((c, "is empty/null", col.isNull() | (F.trim(col) == "")))
        checks.append((c, f"is longer than {MAX_ID_LENGTH} characters", F.length(col) > MAX_ID_LENGTH))
    has_weight, has_time = WEIGHT in raw.columns, TIMESTAMP in raw.columns
    weight = F.col(WEIGHT).try_cast("double") if has_weight else F.lit(1.0)
    if has_weight:
        finite = ~F.isnan(weight) & (F.abs(weight) != float("inf"))
        checks.append((WEIGHT, "is empty/null", F.col(WEIGHT).isNull()))
        checks.append((WEIGHT, "is not a valid float", F.col(WEIGHT).isNotNull() & weight.isNull()))
        checks.append((WEIGHT, "is not finite (NaN or infinity)", weight.isNotNull() & ~finite))
        checks.append((WEIGHT, "is not greater than 0", weight.isNotNull() & finite & (weight <= 0)))
        checks.append((WEIGHT, f"is above the maximum {FLOAT32_MAX}", finite & (weight > FLOAT32_MAX)))
    stamp = _unix_seconds(raw, F) if has_time else F.monotonically_increasing_id()  # no time: the row order
    if has_time:
        checks.append((TIMESTAMP, "is empty/null", F.col(TIMESTAMP).isNull()))
        why = f"is not a valid unix time in seconds (0..{UNIX_TIME_MAX}) or a date"
        bad_time = stamp.isNull() | (stamp < 0) | (stamp > UNIX_TIME_MAX)
        checks.append((TIMESTAMP, why, F.col(TIMESTAMP).isNotNull() & bad_time))
    counts = raw.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.sum(F.when(cond, 1).otherwise(0)).alias(f"c{n}") for n, (_, _, cond) in enumerate(checks)],
    ).first()
    rows = int(counts["rows"])
    if rows < 1:
        raise DataError(f"{source}: 0 row(s); at least 1 needed")
    problems = []
    for n, (column, why, cond) in enumerate(checks):
        bad = int(counts[f"c{n}"] or 0)
        if bad:
            examples = ", ".join(repr(r[0]) for r in raw.filter(cond).select(F.col(column)).limit(3).collect())
            more = f" (and {bad - 3} more)" if bad > 3 else ""
            problems.append(f"{source}: column '{column}' {why} in {bad} row(s): {examples}{more}")
    if problems:
        raise DataError("; ".join(problems))
    clean = raw.select(
        ids[USER].alias(USER),
        ids[ITEM].alias(ITEM),
        weight.cast("float").alias(WEIGHT),
        stamp.cast("long").alias(TIMESTAMP),
    )
    merged = clean.groupBy(USER, ITEM).agg(F.sum(WEIGHT).cast("float").alias(WEIGHT), F.max(TIMESTAMP).alias(TIMESTAMP))
    return SparkInteractions(name or _name_of(source), source, merged, rows, _item_meta(source))


def _unix_seconds(raw: Any, F: Any) -> Any:
    """The timestamp column as unix seconds (long; null where it cannot be read): numbers as they are, dates and
    timestamps converted, strings read as numbers or else as dates/ISO times (naive = the session's time zone)."""
    kind = dict(raw.dtypes)[TIMESTAMP]
    col = F.col(TIMESTAMP)
    if kind in ("timestamp", "timestamp_ntz", "date"):
        return F.unix_timestamp(col.cast("timestamp"))
    if kind == "string":
        return F.coalesce(col.try_cast("double").try_cast("long"), F.unix_timestamp(col.try_cast("timestamp")))
    return col.try_cast("double").try_cast("long")


def _name_of(source: str) -> str:
    tail = source.rstrip("/").rsplit("/", 1)[-1]
    return tail.split(".")[0].replace("*", "") or "interactions"


def _item_meta(source: str) -> pd.DataFrame:
    """``<stem>.items.csv`` beside a local parquet file, as the in-memory loader picks it up (else empty)."""
    empty = pd.DataFrame(columns=[TITLE, GENRES])
    if "://" in source or any(c in source for c in "*?["):
        return empty
    path = Path(source)
    meta = path.with_name(path.name.split(".")[0] + ".items.csv")
    if not meta.is_file():
        return empty
    m = read_table(meta)
    if ITEM not in m.columns:
        return empty
    m[ITEM] = m[ITEM].astype(str)
    return m.drop_duplicates(ITEM).set_index(ITEM)


def load_spark_interactions(
    source: str | Path, cfg: RecommenderConfig, *, name: str | None = None
) -> SparkInteractions:
    """:func:`read_interactions` on the session ``cfg`` configures (``spark_conf``, ``threads``)."""
    session = spark_session(cfg.spark_conf, cfg.threads)
    return read_interactions(session, str(source), name=name)


# ------------------------------------------------------------------ index, split


@dataclass
class Indexed:
    """The interactions with dense indices and the split flag, cached in Spark, and the driver's id maps."""

    frame: Any  # u int, i int, r float, train boolean (+ user, item strings)
    users: IdMap
    items: IdMap
    counts: dict[str, int]


def _distinct_sorted(frame: Any, column: str) -> np.ndarray:
    """The distinct values of a string column, sorted (in Spark), collected as one Arrow column."""
    table = frame.select(column).distinct().orderBy(column).toArrow()
    return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=object)


def index_and_split(data: SparkInteractions, cfg: RecommenderConfig, *, ratio: float) -> Indexed:
    """Dense user/item indices (the position in the sorted distinct ids, collected to the driver) joined back in
    Spark, and the seeded per-user split (module docstring); the result is persisted for the passes that follow."""
    import pyarrow as pa
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    session = data.frame.sparkSession
    merged = data.frame.persist(StorageLevel.MEMORY_AND_DISK)  # read and merged once for the three passes below
    users, items = _distinct_sorted(merged, USER), _distinct_sorted(merged, ITEM)
    umap = session.createDataFrame(pa.table({USER: users, "u": np.arange(len(users), dtype=np.int32)}))
    imap = session.createDataFrame(pa.table({ITEM: items, "i": np.arange(len(items), dtype=np.int32)}))
    value = F.lit(1.0) if cfg.binary else F.col(WEIGHT)
    key = F.xxhash64(F.lit(int(cfg.seed)), F.col(USER), F.col(ITEM))
    per_user = Window.partitionBy("u")
    framed = (
        merged.join(F.broadcast(imap), ITEM)
        .join(umap, USER)
        .select(USER, ITEM, "u", "i", value.cast("float").alias("r"), key.alias("key"))
        .withColumn("rank", F.row_number().over(per_user.orderBy("key", "i")))
        .withColumn("n", F.count(F.lit(1)).over(per_user))
        .withColumn("train", F.col("rank") / F.col("n") <= F.lit(float(ratio)))
        .select(USER, ITEM, "u", "i", "r", "train", "n", "rank")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    c = framed.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("train").cast("long")).alias("train_rows"),
        F.sum(F.when((F.col("rank") == 1) & F.col("train"), 1).otherwise(0)).alias("train_users"),
    ).first()
    merged.unpersist()  # the indexed frame is materialised (persisted) by the aggregation above
    counts = {k: int(c[k] or 0) for k in ("rows", "train_rows", "train_users")}
    counts["eligible_users"] = counts["train_users"]  # a user's last row by key is always test (ratio < 1)
    counts.update(users=len(users), items=len(items))
    return Indexed(framed, IdMap(users), IdMap(items), counts)


# ------------------------------------------------------------------ collect: factors, samples, seen matrix


def _csr(u: np.ndarray, i: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=shape)


def seen_matrix(frame: Any, n_users: int, n_items: int, *, chunk_rows: int = SEEN_CHUNK_ROWS) -> sp.csr_matrix:
    """Binary CSR (users x items) of ``frame``'s ``(u, i)`` rows, collected a slice of users at a time (about
    ``chunk_rows`` interactions each) into preallocated arrays: the driver holds 8 bytes per interaction plus one
    slice in Arrow, never a frame of all rows."""
    from pyspark.sql import functions as F

    per_user = frame.groupBy("u").count().toArrow()
    counts = np.zeros(n_users, np.int64)
    counts[per_user.column("u").to_numpy()] = per_user.column("count").to_numpy()
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = np.empty(nnz, np.int32)
    start = 0
    while start < n_users:
        stop = int(np.searchsorted(indptr, indptr[start] + max(1, chunk_rows), side="right")) - 1
        stop = min(n_users, max(stop, start + 1))
        part = frame.filter((F.col("u") >= start) & (F.col("u") < stop)).select("u", "i").toArrow()
        u, i = part.column("u").to_numpy(), part.column("i").to_numpy()
        order = np.lexsort((i, u))
        indices[indptr[start] : indptr[stop]] = i[order]
        start = stop
    out = sp.csr_matrix((np.ones(nnz, np.float32), indices, indptr), shape=(n_users, n_items))
    out.sort_indices()
    return out


def _item_popularity(frame: Any, n_items: int) -> np.ndarray:
    t = frame.groupBy("i").count().toArrow()
    pop = np.zeros(n_items, np.int64)
    pop[t.column("i").to_numpy()] = t.column("count").to_numpy()
    return pop


def _set_popularity(bundle: RecommenderBundle, popularity: np.ndarray) -> None:
    """Give a bundle whose seen matrix holds a sample of users the popularity of all training interactions (the
    beyond-accuracy statistics of :func:`evaluate_bundle` read it)."""
    bundle.popularity = popularity
    bundle._popular_order = np.argsort(-popularity, kind="stable")
    bundle.popularity_percentile = pd.Series(popularity).rank(pct=True).to_numpy()


def sample_users(indexed: Indexed, n: int | list[str], seed: int) -> np.ndarray:
    """Indices of the evaluated test users: ``n`` users drawn (seeded) from those with >= 1 train and >= 1 test
    interaction, or the given user ids that are eligible."""
    from pyspark.sql import functions as F

    eligible = indexed.frame.filter((F.col("rank") == 1) & F.col("train")).select("u", USER)
    if not isinstance(n, int):
        idx = indexed.users.index_of(np.asarray(n, dtype=object))
        idx = np.unique(idx[idx >= 0]).astype(np.int32)
        got = eligible.join(F.broadcast(_int_frame(eligible.sparkSession, idx, "u")), "u").select("u").toArrow()
        return np.sort(got.column("u").to_numpy())
    draw = eligible.orderBy(F.xxhash64(F.lit(int(seed) + 1), F.col(USER))).limit(int(n)).select("u").toArrow()
    return np.sort(draw.column("u").to_numpy())


def _int_frame(session: Any, values: np.ndarray, name: str) -> Any:
    import pyarrow as pa

    return session.createDataFrame(pa.table({name: np.asarray(values, np.int32)}))


def held_out_metrics(
    model: SparkALS, indexed: Indexed, users: np.ndarray, popularity: np.ndarray, k: int
) -> dict[str, Any]:
    """Collect the sampled users' train and test rows and measure ``model`` (fitted on the train rows) with
    :func:`evaluate_bundle`: the seen filter is their train rows, every test item is relevant."""
    from pyspark.sql import functions as F

    session = indexed.frame.sparkSession
    rows = indexed.frame.join(F.broadcast(_int_frame(session, users, "u")), "u").select("u", "i", "train").toArrow()
    u, i, train = (rows.column(c).to_numpy(zero_copy_only=False) for c in ("u", "i", "train"))
    shape = (len(indexed.users), len(indexed.items))
    bundle = RecommenderBundle(model, indexed.users, indexed.items, _csr(u[train], i[train], shape))
    _set_popularity(bundle, popularity)
    test = pd.DataFrame({USER: indexed.users.ids[u[~train]], ITEM: indexed.items.ids[i[~train]]})
    return evaluate_bundle(bundle, test, (k,))


def reference_sample(data: SparkInteractions, seed: int, n: int = REFERENCE_ROWS) -> pd.DataFrame:
    """``n`` rows (seeded, independent of partitioning) as a pandas frame: the monitoring profile's sample."""
    from pyspark.sql import functions as F

    key = F.xxhash64(F.lit(int(seed) + 2), F.col(USER), F.col(ITEM))
    table = data.frame.orderBy(key).limit(n).toArrow()
    return table.to_pandas()


def fingerprint(data: SparkInteractions) -> tuple[str, float]:
    """(An order-independent sha256 of the merged rows: count and XOR of per-row 64-bit hashes; the newest
    timestamp): what the registry records as the data's fingerprint and ``last_training_timestamp``."""
    from pyspark.sql import functions as F

    cols = [USER, ITEM, WEIGHT, TIMESTAMP]
    r = data.frame.agg(
        F.count(F.lit(1)).alias("n"), F.bit_xor(F.xxhash64(*cols)).alias("x"), F.max(TIMESTAMP).alias("t")
    ).first()
    digest = hashlib.sha256(f"spark-parquet:{','.join(cols)}:{r['n']}:{r['x']}".encode()).hexdigest()
    return digest, float(r["t"])


# ------------------------------------------------------------------ the train command's path


def _check(cfg: RecommenderConfig, tune: int) -> None:
    if cfg.model != "als":
        raise ConfigError(f"config model: the Spark-native path trains only --model als, not {cfg.model!r}")
    if cfg.weighting != "none":
        raise ConfigError(
            f"config weighting: {cfg.weighting!r} is not available on the Spark-native path (parquet with "
            "--engine spark); use weighting none, or a CSV for the in-memory path"
        )
    if tune:
        raise ConfigError("--tune is not available on the Spark-native path (parquet with --engine spark)")


def _check_size(data: SparkInteractions, c: dict[str, int]) -> None:
    if c["items"] < 2 or c["eligible_users"] < 1:
        raise DataError(
            f"{data.source}: too little data for the ms-stratified split: {c['rows']} interaction(s) of "
            f"{c['users']} user(s) and {c['items']} item(s) leave {c['eligible_users']} user(s) with both training "
            "and test interactions. Needed: at least 2 items and users with at least 2 interactions (4 or more for "
            "75/25)."
        )


def held_out_run(
    indexed: Indexed, cfg: RecommenderConfig, params: dict[str, Any], eval_users: int | list[str], timings: dict
) -> dict[str, Any]:
    """Fit on the training rows and measure on the sampled users' test rows (``timings`` gets the seconds)."""
    from pyspark.sql import functions as F

    c, n_users, n_items = indexed.counts, len(indexed.users), len(indexed.items)
    t0 = time.perf_counter()
    held = SparkALS(seed=cfg.seed, threads=cfg.threads, **params)
    train_rows = indexed.frame.filter(F.col("train")).select("u", "i", "r")
    held.fit_frame(train_rows, n_users, n_items, nnz=c["train_rows"], active_users=c["train_users"])
    timings["held_out_fit_s"] = time.perf_counter() - t0
    timings["held_out_model_fit_s"] = held.fit_seconds
    t0 = time.perf_counter()
    users = sample_users(indexed, eval_users, cfg.seed)
    popularity = _item_popularity(indexed.frame.filter(F.col("train")), n_items)
    held_out = held_out_metrics(held, indexed, users, popularity, cfg.k)
    held_out["skipped_users"] = n_users - c["eligible_users"]  # test-only users (one interaction)
    timings["evaluate_s"] = time.perf_counter() - t0
    return held_out


def scale_run(data: str, *, eval_users: int, threads: int, seed: int, params: dict | None) -> dict[str, Any]:
    """The scaling bench's ``spark-native`` engine (:mod:`apps.recommender.scale`): read and validate, index and
    split, fit on the training rows and evaluate ``eval_users`` sampled test users, all as above, with the bench's
    keys. ``peak_rss_self_bytes`` is the Python driver's own peak (the JVM is a child process: the bench's
    ``peak_rss_bytes`` covers both). The evaluated users are drawn by this path's own seeded split, not the
    in-memory engines' sample."""
    from common.scaling import peak_rss_self_bytes, rss_bytes

    cfg = RecommenderConfig(seed=seed, threads=threads, engine="spark")
    p = {**cfg.model_params("als"), **(params or {}), "engine": "spark"}
    out: dict[str, Any] = {"engine": "spark-native", "model": "als"}
    t0 = time.perf_counter()
    spark_session(cfg.spark_conf, threads)
    out["jvm_start_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded = load_spark_interactions(data, cfg)
    out["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    indexed = index_and_split(loaded, cfg, ratio=1 - cfg.test_ratio)
    out["split_s"] = time.perf_counter() - t0
    c = indexed.counts
    out.update(rows=c["rows"], users=c["users"], items=c["items"])
    out["rss_before_fit_bytes"] = rss_bytes()
    timings: dict[str, float] = {}
    try:
        _check_size(loaded, c)
        m = held_out_run(indexed, cfg, p, int(eval_users), timings)
    finally:
        indexed.frame.unpersist()
    out["train_s"] = timings["held_out_fit_s"]
    out["fit_s"] = timings["held_out_model_fit_s"]
    out["peak_rss_self_bytes"] = peak_rss_self_bytes()
    out.update({k: m[k] for k in ("ndcg@10", "precision@10", "recall@10", "coverage")})
    out["eval_users"] = m["users"]
    out["predict_s"] = timings["evaluate_s"]
    return out


def train_spark_native(
    data: SparkInteractions,
    cfg: RecommenderConfig,
    *,
    tune: int = 0,
    eval_users: int | list[str] = EVAL_USERS,
) -> TrainResult:
    """What ``train --engine spark`` runs on parquet: index and split in Spark, fit ALS on the training rows and
    measure nDCG/precision/recall@``cfg.k`` on ``eval_users`` sampled test users (or those ids), then fit on all
    rows: the production bundle (factors and id maps on the driver; serving needs no JVM).

    Raises:
        ConfigError: a setting this path does not offer (another model, a weighting, ``--tune``).
        DataError: too little data to split or to fit (one line).
    """
    _check(cfg, tune)
    params = cfg.model_params("als")
    params["engine"] = "spark"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    indexed = index_and_split(data, cfg, ratio=1 - cfg.test_ratio)
    c = indexed.counts
    timings["index_split_s"] = time.perf_counter() - t0
    n_users, n_items = c["users"], c["items"]
    try:
        _check_size(data, c)
    except DataError:
        indexed.frame.unpersist()
        raise
    log.info("spark-native: %s", c)
    try:
        held_out = held_out_run(indexed, cfg, params, eval_users, timings)
        t0 = time.perf_counter()
        model = SparkALS(seed=cfg.seed, threads=cfg.threads, **params)
        model.fit_frame(indexed.frame.select("u", "i", "r"), n_users, n_items, nnz=c["rows"], active_users=n_users)
        timings["fit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        seen = seen_matrix(indexed.frame, n_users, n_items)
        timings["collect_seen_s"] = time.perf_counter() - t0
    finally:
        indexed.frame.unpersist()
    info = {
        "weighting": cfg.weighting,
        "binary": cfg.binary,
        "trained_at": time.time(),
        "dataset": data.name,
        "path": "spark-native",
        "rows_read": data.rows,
        "interactions": c["rows"],
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    bundle = RecommenderBundle(model, indexed.users, indexed.items, seen, data.items, info)
    log.info("spark-native: held-out %s; timings %s", {k: held_out[k] for k in (f"ndcg@{cfg.k}",)}, info["timings"])
    return TrainResult(bundle, params, held_out, None)
