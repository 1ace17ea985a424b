"""Interaction data: the schema, the embedded synthetic generator, MovieLens loaders and the user's own files.

Every loader returns a :class:`Dataset` whose ``interactions`` frame has exactly the columns below (ids as
strings, whatever their type in the source, so ``"42"`` in a URL matches ``42`` in a CSV):

| column | type | meaning |
|---|---|---|
| ``user`` | str, 1-200 chars | user id |
| ``item`` | str, 1-200 chars | item id |
| ``weight`` | float32 > 0 | strength of the interaction (count, rating, watch time); 1 when absent |
| ``timestamp`` | int64 | unix seconds (a file may give seconds or dates); the row order when it has no time |

A user's file is validated by :data:`SCHEMA` (:class:`common.data.Schema`): one-line errors naming the rows, the
column and why.

Duplicate (user, item) pairs are merged: weights summed, the latest timestamp kept.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.data import SECONDS_PER_DAY, Column, DataError, Schema, fetch, read_table

log = logging.getLogger(__name__)

# Column names, defined once for the whole app.
USER, ITEM, WEIGHT, TIMESTAMP = "user", "item", "weight", "timestamp"
COLUMNS = [USER, ITEM, WEIGHT, TIMESTAMP]
TITLE, GENRES = "title", "genres"  # optional item metadata columns

# GroupLens archives (research use only; never committed). md5s are the ones GroupLens publishes next to the
# zips; the sha256s are what common.data.fetch verifies.
MOVIELENS = {
    "ml-100k": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "md5": "0e33842e24a9c977be4e0107933c0723",
        "sha256": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        "ratings": "u.data",
        "ratings_md5": "6e47046882bad158b0efbb84cd5cb987",
    },
    "ml-1m": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "md5": "c4d9eecfca2ab87c1945afe126590906",
        "sha256": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        "ratings": "ratings.dat",
        "ratings_md5": None,
    },
}


@dataclass
class Dataset:
    """Interactions (the columns above) plus optional item metadata indexed by item id."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[TITLE, GENRES]))

    def __post_init__(self) -> None:
        missing = set(COLUMNS) - set(self.interactions.columns)
        if missing:
            raise DataError(f"{self.name}: interactions lack columns {sorted(missing)}")

    @property
    def n_users(self) -> int:
        return int(self.interactions[USER].nunique())

    @property
    def n_items(self) -> int:
        return int(self.interactions[ITEM].nunique())

    def summary(self) -> dict[str, float]:
        """Size, density and activity statistics (for logs and the report)."""
        df = self.interactions
        per_user = df.groupby(USER).size()
        per_item = df.groupby(ITEM).size()
        top = per_item.sort_values(ascending=False)
        return {
            "interactions": len(df),
            "users": self.n_users,
            "items": self.n_items,
            "density": len(df) / max(1, self.n_users * self.n_items),
            "user_activity_median": float(per_user.median()),
            "user_activity_max": int(per_user.max()),
            "top_1pct_items_share": float(top.iloc[: max(1, len(top) // 100)].sum() / len(df)),
        }


# ------------------------------------------------------------------ normalisation and validation


MAX_ID_LENGTH = 200  # ids are strings of 1..MAX_ID_LENGTH characters, in files and in the HTTP API alike

# The user's file format, validated by common.data.Schema (one-line errors naming rows, column and why).
SCHEMA = Schema(
    [
        Column(USER, "id", max_length=MAX_ID_LENGTH),
        Column(ITEM, "id", max_length=MAX_ID_LENGTH),
        Column(WEIGHT, "float", required=False, gt=0, max=float(np.finfo(np.float32).max)),
        Column(TIMESTAMP, "unixtime", required=False),
    ],
    min_rows=1,
)
USERS_SCHEMA = Schema([Column(USER, "id", max_length=MAX_ID_LENGTH)], min_rows=1)


def normalize_interactions(df: pd.DataFrame, *, source: str = "interactions") -> pd.DataFrame:
    """Validate and coerce a ``user,item[,weight][,timestamp]`` frame with :data:`SCHEMA`; raise
    :class:`DataError` (one line: rows, column, why) on bad rows.

    - ``user``/``item``: required, non-empty ids of at most :data:`MAX_ID_LENGTH` characters; converted to str.
    - ``weight``: optional, a finite number > 0 (default 1).
    - ``timestamp``: optional; unix seconds or a date/ISO string (naive = UTC); default: the row order.
    """
    checked = SCHEMA.validate(df, source=source)
    out = pd.DataFrame({USER: checked[USER].to_numpy(object), ITEM: checked[ITEM].to_numpy(object)})
    out[WEIGHT] = checked[WEIGHT].to_numpy(np.float32) if WEIGHT in checked else np.float32(1.0)
    out[TIMESTAMP] = (
        checked[TIMESTAMP].to_numpy(np.int64) if TIMESTAMP in checked else np.arange(len(checked), dtype=np.int64)
    )
    return dedupe(out)


def load_users(path: str | Path) -> list[str]:
    """The ``user`` column of a users file (CSV/parquet; extra columns ignored), validated: at least one user.

    Raises:
        DataError: missing/unreadable file, no ``user`` column, no rows, or empty/over-long ids (one line).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a CSV or parquet file with a '{USER}' column")
    kwargs = {} if path.name.lower().endswith((".parquet", ".pq")) else {"dtype": {USER: str}}
    df = read_table(path, **kwargs)
    return USERS_SCHEMA.validate(df, source=str(path))[USER].tolist()


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """Merge repeated (user, item) pairs: sum of weights, latest timestamp; keeps first-seen order."""
    if not df.duplicated([USER, ITEM]).any():
        return df[COLUMNS].reset_index(drop=True)
    agg = df.groupby([USER, ITEM], sort=False, as_index=False).agg({WEIGHT: "sum", TIMESTAMP: "max"})
    return agg[COLUMNS].astype({WEIGHT: "float32"})


# Peak resident bytes per interaction of the in-memory path (load, validate, split, build the matrices, fit ALS),
# measured by the scaling bench (bench/results/recommender-scale.json: peak RSS / rows at 1e6-1e7 rows)
BYTES_PER_INTERACTION = 250


def estimated_rows(path: Path) -> int:
    """Rows of a parquet file from its footer; of a CSV from its size and the mean length of its first lines."""
    if path.name.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    lines = max(1, head.count(b"\n"))
    return int(size / max(1.0, len(head) / lines))


def check_fits_in_memory(path: Path) -> None:
    """Refuse (one line, exit 2) an interactions file the in-memory path cannot hold on this machine."""
    from common.scaling import check_memory

    if path.name.lower().endswith(".gz"):
        return  # compressed CSV: no cheap row count; pandas reads it in one go
    rows = estimated_rows(path)
    check_memory(
        rows * BYTES_PER_INTERACTION,
        what=f"{path}: {rows:,} interactions in memory (about {BYTES_PER_INTERACTION} bytes each)",
        instead="train on a sample of its users, or with --engine spark on a parquet copy (read, split and fitted "
        "in Spark, locally or on a cluster: see the recommender README, 'Spark on a cluster')",
    )


def load_interactions(path: str | Path) -> Dataset:
    """A user's own ``user,item[,weight][,timestamp]`` CSV or parquet file, validated.

    An optional item metadata file ``<stem>.items.csv`` (``item,title[,genres]``) beside it is picked up. A file
    that will not fit in memory is refused before it is read (:func:`check_fits_in_memory`).
    """
    path = Path(path)
    if path.is_file():
        check_fits_in_memory(path)
    df = read_table(path)
    interactions = normalize_interactions(df, source=str(path))
    items = pd.DataFrame(columns=[TITLE, GENRES])
    meta = path.with_name(path.name.split(".")[0] + ".items.csv")
    if meta.exists():
        m = read_table(meta)
        if ITEM in m.columns:
            m[ITEM] = m[ITEM].astype(str)
            items = m.drop_duplicates(ITEM).set_index(ITEM)
    return Dataset(name=path.stem, interactions=interactions, items=items)


# ------------------------------------------------------------------ MovieLens


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def movielens_dir(variant: str, data_dir: Path, *, download: bool = True) -> Path:
    """Directory holding the extracted MovieLens files: ``<data_dir>/<variant>/`` (the workspace's data directory,
    ``$MLREF_DATA_DIR``).

    Uses the files already there (e.g. ``MLREF_DATA_DIR=../shared/data``); otherwise downloads the GroupLens zip
    through :func:`common.data.fetch` (sha256-verified) and extracts it.
    """
    if variant not in MOVIELENS:
        raise DataError(f"unknown MovieLens variant {variant!r}; choose one of {list(MOVIELENS)}")
    spec = MOVIELENS[variant]
    root = Path(data_dir) / variant
    if (root / spec["ratings"]).exists():
        return root
    if not download:
        raise DataError(f"{root / spec['ratings']} not found and download=False")
    zpath = fetch(spec["url"], spec["sha256"], Path(data_dir).absolute() / f"{variant}.zip")
    with zipfile.ZipFile(zpath) as zf:
        for member in zf.namelist():
            name = Path(member).name
            if member.startswith(f"{variant}/") and name and not member.endswith("/"):
                (root / Path(member).relative_to(variant)).parent.mkdir(parents=True, exist_ok=True)
                (root / Path(member).relative_to(variant)).write_bytes(zf.read(member))
    return root


def load_movielens(variant: str, data_dir: Path, *, download: bool = True) -> Dataset:
    """MovieLens 100K or 1M as implicit feedback: every rating is an interaction, ``weight`` = the rating.

    Row order is the file's (the Microsoft Recommenders split depends on it). Item metadata: title and genres.
    """
    root = movielens_dir(variant, data_dir, download=download)
    spec = MOVIELENS[variant]
    ratings = root / spec["ratings"]
    if spec["ratings_md5"] and (got := _md5(ratings)) != spec["ratings_md5"]:
        log.warning("%s md5 %s differs from the GroupLens original %s", ratings, got, spec["ratings_md5"])
    names = [USER, ITEM, WEIGHT, TIMESTAMP]
    if variant == "ml-100k":
        df = pd.read_csv(ratings, sep="\t", names=names, dtype=str)
        raw = pd.read_csv(root / "u.item", sep="|", header=None, encoding="latin-1", dtype=str)
        genre_names = pd.read_csv(root / "u.genre", sep="|", header=None, encoding="latin-1")[0].tolist()
        flags = raw.iloc[:, 5 : 5 + len(genre_names)].astype(int).to_numpy()
        genres = ["|".join(g for g, f in zip(genre_names, row, strict=True) if f) for row in flags]
        items = pd.DataFrame({ITEM: raw[0], TITLE: raw[1], GENRES: genres}).set_index(ITEM)
    else:
        df = pd.read_csv(ratings, sep="::", names=names, dtype=str, engine="python")
        raw = pd.read_csv(root / "movies.dat", sep="::", header=None, encoding="latin-1", dtype=str, engine="python")
        items = pd.DataFrame({ITEM: raw[0], TITLE: raw[1], GENRES: raw[2]}).set_index(ITEM)
    return Dataset(name=variant, interactions=normalize_interactions(df, source=str(ratings)), items=items)


# ------------------------------------------------------------------ synthetic default


@dataclass
class SyntheticWorld:
    """Latent structure behind the synthetic data, so later periods (drift, new users/items) stay consistent.

    Items belong to one of ``n_clusters`` taste clusters and have a power-law base popularity; users mix a
    few clusters (Dirichlet with small concentration) and have log-normal activity.
    """

    item_cluster: np.ndarray  # (n_items,) int
    item_pop: np.ndarray  # (n_items,) float, sums to 1
    user_taste: np.ndarray  # (n_users, n_clusters) float, rows sum to 1
    user_activity: np.ndarray  # (n_users,) int, interactions per user over the whole period
    seed: int

    @property
    def n_users(self) -> int:
        return len(self.user_taste)

    @property
    def n_items(self) -> int:
        return len(self.item_cluster)


def make_world(
    n_users: int = 2000,
    n_items: int = 1000,
    n_clusters: int = 10,
    mean_activity: float = 40.0,
    zipf: float = 1.0,
    concentration: float = 0.15,
    seed: int = 42,
) -> SyntheticWorld:
    """Draw the latent structure (see :class:`SyntheticWorld`)."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, n_clusters, n_items)
    ranks = rng.permutation(n_items) + 1
    pop = 1.0 / ranks**zipf
    taste = rng.dirichlet(np.full(n_clusters, concentration), n_users)
    sigma = 0.9
    activity = rng.lognormal(np.log(mean_activity) - sigma**2 / 2, sigma, n_users)
    activity = np.clip(np.round(activity), 5, max(5, n_items // 3)).astype(np.int64)
    return SyntheticWorld(cluster, pop / pop.sum(), taste, activity, seed)


def sample_interactions(
    world: SyntheticWorld,
    users: np.ndarray,
    n_per_user: np.ndarray,
    *,
    start: int,
    end: int,
    rng: np.random.Generator,
    exclude: dict[int, np.ndarray] | None = None,
    pop_power: float = 0.8,
) -> pd.DataFrame:
    """Sample distinct items per user (Gumbel top-k on log p), p(i | u) ∝ pop_i^pop_power · taste_u[cluster_i].

    Timestamps are uniform within each user's random active span inside [start, end). Returns the integer
    columns ``u``, ``i``, ``weight``, ``timestamp``.
    """
    log_pop = pop_power * np.log(world.item_pop)
    rows = []
    for chunk in np.array_split(np.arange(len(users)), max(1, len(users) // 512)):
        u = users[chunk]
        logits = log_pop[None, :] + np.log(world.user_taste[u][:, world.item_cluster] + 1e-4)
        keys = logits + rng.gumbel(size=logits.shape)
        if exclude:
            for row, uid in enumerate(u):
                keys[row, exclude.get(int(uid), [])] = -np.inf
        order = np.argsort(-keys, axis=1)
        for row, uid in enumerate(u):
            n = int(n_per_user[chunk[row]])
            items = order[row, :n]
            items = items[np.isfinite(keys[row, items])]
            span = (end - start) * rng.uniform(0.2, 1.0)
            t0 = start + rng.uniform(0, end - start - span)
            ts = np.sort(rng.uniform(t0, t0 + span, len(items))).astype(np.int64)
            rows.append(pd.DataFrame({"u": uid, "i": items, "timestamp": ts}))
    df = pd.concat(rows, ignore_index=True)
    df["weight"] = (1 + rng.poisson(0.5, len(df))).astype(np.float32)  # repeat plays / purchases
    return df


def _to_dataset(name: str, world: SyntheticWorld, df: pd.DataFrame) -> Dataset:
    inter = (
        pd.DataFrame(
            {
                USER: [f"u{u:05d}" for u in df["u"]],
                ITEM: [f"i{i:05d}" for i in df["i"]],
                WEIGHT: df["weight"].to_numpy(np.float32),
                TIMESTAMP: df["timestamp"].to_numpy(np.int64),
            }
        )
        .sort_values(TIMESTAMP, kind="stable")
        .reset_index(drop=True)
    )
    ids = np.arange(world.n_items)
    items = pd.DataFrame(
        {
            ITEM: [f"i{i:05d}" for i in ids],
            TITLE: [f"Item {i} (cluster {c})" for i, c in zip(ids, world.item_cluster, strict=True)],
            GENRES: [f"cluster-{c}" for c in world.item_cluster],
        }
    ).set_index(ITEM)
    return Dataset(name=name, interactions=inter[COLUMNS], items=items)


SYNTH_START = 1_700_000_000  # 2023-11-14, unix seconds
TINY = {"n_users": 300, "n_items": 150, "n_clusters": 5, "mean_activity": 20.0}  # seconds, not minutes


def synthetic(
    n_users: int = 2000,
    n_items: int = 1000,
    n_clusters: int = 10,
    mean_activity: float = 40.0,
    days: int = 180,
    seed: int = 42,
) -> Dataset:
    """The embedded default: seeded synthetic implicit feedback with taste clusters and popularity skew."""
    world = make_world(n_users, n_items, n_clusters, mean_activity, seed=seed)
    rng = np.random.default_rng(seed + 1)
    df = sample_interactions(
        world,
        np.arange(world.n_users),
        world.user_activity,
        start=SYNTH_START,
        end=SYNTH_START + days * SECONDS_PER_DAY,
        rng=rng,
    )
    return _to_dataset("synthetic", world, df)


def synthetic_next_period(
    n_users: int = 2000,
    n_items: int = 1000,
    n_clusters: int = 10,
    mean_activity: float = 40.0,
    days: int = 180,
    seed: int = 42,
    *,
    period_days: int = 30,
    new_user_share: float = 0.3,
    new_item_share: float = 0.1,
    trend_boost: float = 10.0,
    active_share: float = 0.5,
) -> Dataset:
    """The period after :func:`synthetic` (same arguments), with drift: new users, new items that become
    popular (``trend_boost`` times their base popularity), and existing users continuing.

    Interactions already present in the base period are not repeated.
    """
    base = make_world(n_users, n_items, n_clusters, mean_activity, seed=seed)
    rng = np.random.default_rng(seed + 2)
    n_new_items = round(n_items * new_item_share)
    n_new_users = round(n_users * active_share * new_user_share / (1 - new_user_share))
    new_cluster = rng.integers(0, n_clusters, n_new_items)
    new_pop = base.item_pop[rng.integers(0, n_items, n_new_items)] * trend_boost
    pop = np.concatenate([base.item_pop, new_pop])
    taste = np.vstack([base.user_taste, rng.dirichlet(np.full(n_clusters, 0.15), n_new_users)])
    world = SyntheticWorld(
        np.concatenate([base.item_cluster, new_cluster]),
        pop / pop.sum(),
        taste,
        np.concatenate([base.user_activity, rng.integers(5, 20, n_new_users)]),
        seed,
    )
    old = synthetic(n_users, n_items, n_clusters, mean_activity, days, seed).interactions
    codes = pd.DataFrame({"u": old[USER].str[1:].astype(int), "i": old[ITEM].str[1:].astype(int)})
    seen = {int(u): g.to_numpy() for u, g in codes.groupby("u")["i"]}
    returning = rng.choice(n_users, int(n_users * active_share), replace=False)
    users = np.concatenate([returning, np.arange(n_users, n_users + n_new_users)])
    per_user = np.maximum(3, (world.user_activity[users] * period_days / days).round().astype(int))
    per_user[len(returning) :] = world.user_activity[n_users:]
    start = SYNTH_START + days * SECONDS_PER_DAY
    df = sample_interactions(
        world, users, per_user, start=start, end=start + period_days * SECONDS_PER_DAY, rng=rng, exclude=seen
    )
    return _to_dataset("synthetic-next", world, df)


# ------------------------------------------------------------------ entry point


def load_dataset(spec: str | Path = "synthetic", *, data_dir: Path | None = None, **synthetic_kwargs) -> Dataset:
    """``synthetic`` (default, offline), ``synthetic-next`` (its next month), ``ml-100k``, ``ml-1m`` (read from or
    downloaded into ``data_dir``), or a path to the user's interactions file."""
    if str(spec) == "synthetic":
        return synthetic(**synthetic_kwargs)
    if str(spec) == "synthetic-next":
        return synthetic_next_period(**synthetic_kwargs)
    if str(spec) in MOVIELENS:
        if data_dir is None:
            raise ValueError(f"{spec}: load_dataset needs data_dir (the workspace's data directory)")
        return load_movielens(str(spec), data_dir)
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"dataset {spec!r} is neither 'synthetic', 'synthetic-next', one of {list(MOVIELENS)}, nor an existing file"
        )
    return load_interactions(path)
