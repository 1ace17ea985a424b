"""The models (ALS, BPR, item-kNN, EASE, most-popular, random) behind one typed interface, and the saved bundle.

Every model answers the same three questions from a **users x items** CSR matrix:

- ``fit(user_items)``: train. Shape and type are checked; a transposed matrix is reported, not trained on.
- ``recommend(history, k, users=...)``: top-k item indices per row of ``history`` (the users' interactions, used
  to filter seen items and, for users unknown to the model, to fold them in). ``users`` holds each row's training
  index, or -1 for a user the model has not seen (cold start: ALS solves that user's factors from the history,
  ``implicit``'s ``recalculate_user``; item-based models need nothing else).
- ``similar_items(item, k)``.

``implicit`` traps this wrapper removes: (1) since 0.5, ``fit`` takes user_items (users x items), not
item_users; (2) ``recommend(userid, user_items[userid], ...)`` needs *the rows of those users*, not the whole
matrix, and a CSR matrix; (3) its BLAS must run single-threaded (its own threads do the parallel work).

:class:`RecommenderBundle` is what is saved, registered and served: the model plus id maps, the training
interactions (the "seen" filter), item metadata and popularity. It is a directory of ``.npz``/``.json``/``.csv``
files; no pickle.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
from scipy.linalg.lapack import spotrf, spotri
from threadpoolctl import threadpool_limits

from apps.recommender.config import EASE_MAX_ITEMS, default_threads
from apps.recommender.data import GENRES, ITEM, TITLE
from apps.recommender.features import IdMap, history_matrix
from common.data import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
NEG_INF = np.float32(-np.inf)
ENGINE = "implicit"  # the single-machine implementations (implicit, numpy/LAPACK)


class ShapeError(ValueError):
    """A matrix does not have the orientation or size the model expects."""


def check_user_items(
    x: Any, n_users: int | None = None, n_items: int | None = None, what: str = "user_items"
) -> sp.csr_matrix:
    """Return ``x`` as float32 CSR (users x items) or raise :class:`ShapeError` saying what is wrong."""
    if not sp.issparse(x):
        raise ShapeError(f"{what} must be a scipy.sparse matrix (users x items), got {type(x).__name__}")
    x = sp.csr_matrix(x, dtype=np.float32)
    rows, cols = x.shape
    if n_items is not None and cols != n_items:
        hint = " It looks transposed (items x users): pass user_items, rows = users." if rows == n_items else ""
        raise ShapeError(f"{what} has {cols} columns but the model has {n_items} items.{hint}")
    if n_users is not None and rows != n_users:
        raise ShapeError(f"{what} has {rows} rows but {n_users} users were expected")
    if x.nnz and (x.data < 0).any():
        raise ShapeError(f"{what} has negative entries; confidences must be >= 0")
    return x


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of ``scores`` (b x n_items), skipping ``exclude``'s non-zeros.

    Returns (indices (b, k) int64, scores (b, k) float32); slots beyond the available items are -1 / -inf.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        r, c = exclude.nonzero()
        scores[r, c] = NEG_INF
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    val = np.take_along_axis(part_scores, order, axis=1)
    idx[~np.isfinite(val)] = -1
    return idx, val


class Recommender(ABC):
    """Base class: subclasses implement ``_fit``, ``scores`` and the state round trip."""

    name: ClassVar[str]
    engine: ClassVar[str] = "implicit"  # which implementation trained it (``spark``: Spark MLlib)

    def __init__(self, seed: int = 42, threads: int | None = None, **params: Any) -> None:
        self.params = params
        self.seed = int(seed)
        self.threads = threads or default_threads()
        self.n_users = 0
        self.n_items = 0
        self.fit_seconds = 0.0

    # -- training
    def fit(self, user_items: sp.csr_matrix) -> Recommender:
        """Train on a users x items matrix (values = confidences; zero = no interaction)."""
        x = check_user_items(user_items)
        if x.nnz == 0:
            raise ShapeError("user_items is empty")
        self.n_users, self.n_items = x.shape
        t0 = time.perf_counter()
        self._fit(x)
        self.fit_seconds = time.perf_counter() - t0
        log.info("%s fitted on %d users x %d items (%d nnz) in %.2fs", self.name, *x.shape, x.nnz, self.fit_seconds)
        return self

    @abstractmethod
    def _fit(self, x: sp.csr_matrix) -> None: ...

    # -- scoring
    @abstractmethod
    def scores(self, history: sp.csr_matrix, users: np.ndarray | None = None) -> np.ndarray:
        """Dense scores (b x n_items) for the rows of ``history``; ``users`` = training index per row or -1."""

    def _users(self, history: sp.csr_matrix, users: np.ndarray | None) -> np.ndarray:
        if users is None:
            return np.full(history.shape[0], -1, dtype=np.int64)
        users = np.asarray(users, dtype=np.int64)
        if users.shape != (history.shape[0],):
            raise ShapeError(f"users has {users.shape} entries for {history.shape[0]} history rows")
        if (users >= self.n_users).any():
            raise ShapeError(f"user index >= n_users={self.n_users}")
        return users

    def recommend(
        self,
        history: sp.csr_matrix,
        k: int = 10,
        users: np.ndarray | None = None,
        filter_seen: bool = True,
        batch_size: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices, scores), each (b, k), for the rows of ``history`` (see module docstring)."""
        history = check_user_items(history, n_items=self.n_items, what="history")
        users = self._users(history, users)
        out_i, out_s = [], []
        for start in range(0, history.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            h = history[rows]
            idx, val = top_k(self.scores(h, users[rows]), k, h if filter_seen else None)
            out_i.append(idx)
            out_s.append(val)
        if not out_i:
            return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
        return np.vstack(out_i), np.vstack(out_s)

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items most similar to ``item`` (itself excluded): (indices (k,), scores (k,))."""
        if not 0 <= item < self.n_items:
            raise IndexError(f"item index {item} out of range 0..{self.n_items - 1}")
        sims = self._item_similarity(item).astype(np.float32)
        sims[item] = NEG_INF
        idx, val = top_k(sims[None, :], k)
        return idx[0], val[0]

    def _item_similarity(self, item: int) -> np.ndarray:
        onehot = sp.csr_matrix(([1.0], ([0], [item])), shape=(1, self.n_items), dtype=np.float32)
        return self.scores(onehot)[0]

    # -- persistence (arrays only)
    @abstractmethod
    def state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def load_state(self, arrays: dict[str, np.ndarray]) -> None: ...


# ------------------------------------------------------------------ baselines


class MostPopular(Recommender):
    """Scores every item by the number of training users who interacted with it."""

    name = "popular"

    def _fit(self, x: sp.csr_matrix) -> None:
        self.popularity = np.asarray((x > 0).sum(axis=0)).ravel().astype(np.float32)

    def scores(self, history, users=None):  # noqa: ARG002 - the interface's signature
        return np.broadcast_to(self.popularity, (history.shape[0], self.n_items)).copy()

    def _item_similarity(self, item: int) -> np.ndarray:  # noqa: ARG002 - the interface's signature
        return self.popularity.copy()

    def state(self):
        return {"popularity": self.popularity}

    def load_state(self, arrays):
        self.popularity = arrays["popularity"]


class RandomRecommender(Recommender):
    """Uniformly random scores (seeded): the floor every model must clear."""

    name = "random"

    def _fit(self, x):
        pass

    def scores(self, history, users=None):  # noqa: ARG002 - the interface's signature
        rng = np.random.default_rng([self.seed, history.shape[0], int(history.nnz)])
        return rng.random((history.shape[0], self.n_items), dtype=np.float32)

    def state(self):
        return {}

    def load_state(self, arrays):
        pass


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, 2019), closed form.

    B = I - P · diag(1 / diag(P)) with P = (XᵀX + λI)⁻¹, i.e. B_ij = -P_ij / P_jj and B_jj = 0;
    scores = X_u · B. XᵀX + λI is symmetric positive definite, so P comes from a float32 Cholesky factorisation
    inverted in place (LAPACK ``spotrf`` + ``spotri``): about a quarter of the CPU time of the float64 ``inv``
    (measured: 0.35 s vs 1.5 s at 2.5k items on one core) and one n_items² array instead of several; B agrees
    with the float64 inverse to ~1e-7.

    Cost: time ∝ n_items³, memory :meth:`memory_bytes` at the peak (:attr:`copies` · n_items² · 4 bytes plus the
    Gram's block temporaries; measured 0.79 GiB of growth at 10k items against an estimate of 0.90). Catalogues above
    ``max_items`` (default :data:`EASE_MAX_ITEMS`, a hyper-parameter) are refused with a
    :class:`~common.data.DataError` before any allocation: use ``als`` or ``itemknn`` there.
    """

    name = "ease"
    copies = 2  # n_items² float32 arrays at the peak: the C-ordered Gram and LAPACK's Fortran-ordered copy of it

    @classmethod
    def memory_bytes(cls, n_items: int) -> int:
        """Peak memory of a fit: :attr:`copies` dense n_items² float32 arrays plus the Gram's dense and sparse
        block temporaries (n_items x GRAM_BLOCK each)."""
        return cls.copies * n_items * n_items * 4 + 2 * n_items * min(GRAM_BLOCK, n_items) * 4

    def _fit(self, x):
        n = x.shape[1]
        limit = int(self.params.get("max_items", EASE_MAX_ITEMS))
        if n > limit:
            need = self.memory_bytes(n) / 2**30
            raise DataError(
                f"EASE needs dense {n} x {n} matrices: {n} items would take about {need:.1f} GiB, above its limit "
                f"of {limit} items. Use --model als or --model itemknn for a catalogue this size (or raise "
                f"params.ease.max_items in --config if the memory is there)."
            )
        lam = float(self.params.get("lambda_", 500.0))
        if not lam > 0:
            raise DataError(f"EASE lambda_ must be > 0 (got {lam})")
        p = _gram((x > 0).astype(np.float32), lam)
        with threadpool_limits(self.threads, "blas"):
            c, info = spotrf(p, lower=1, overwrite_a=1, clean=0)
            if info == 0:
                p, info = spotri(c, lower=1, overwrite_c=1)
        if info != 0:  # cannot happen for lambda_ > 0 in exact arithmetic; float32 overflow on absurd counts
            raise ShapeError(f"EASE: XᵀX + λI is not positive definite in float32 (LAPACK info {info})")
        _symmetrize_from_lower(p)
        p = p.T if p.flags.f_contiguous and not p.flags.c_contiguous else p  # P is symmetric: same matrix, C order
        p /= -np.diag(p)[None, :].copy()
        p[np.diag_indices_from(p)] = 0.0
        self.B = p

    def scores(self, history, users=None):  # noqa: ARG002 - the interface's signature
        return np.asarray((history > 0).astype(np.float32) @ self.B)

    def _item_similarity(self, item):
        return self.B[item].copy()

    def state(self):
        return {"B": self.B}

    def load_state(self, arrays):
        self.B = arrays["B"]


GRAM_BLOCK = 2048  # columns of XᵀX computed per sparse product in _gram


def _gram(xb: sp.csr_matrix, lam: float, block: int = GRAM_BLOCK) -> np.ndarray:
    """Dense float32 XᵀX + λI (n_items²), built ``block`` columns at a time so that the sparse product never
    holds more than n_items x block entries (co-occurrence counts are exact in float32 up to 2**24)."""
    n = xb.shape[1]
    xt, xc = xb.T.tocsr(), xb.tocsc()
    gram = np.empty((n, n), np.float32)
    for j in range(0, n, block):
        gram[:, j : j + block] = (xt @ xc[:, j : j + block]).toarray()
    gram[np.diag_indices_from(gram)] += lam
    return gram


def _symmetrize_from_lower(a: np.ndarray, block: int = 1024) -> None:
    """Copy the lower triangle of square ``a`` onto its upper triangle, in place, a block of rows at a time."""
    n = a.shape[0]
    for i in range(0, n, block):
        j = min(i + block, n)
        a[i:j, j:] = a[j:, i:j].T
        diag = a[i:j, i:j]
        diag[:] = np.tril(diag) + np.tril(diag, -1).T


class ItemKNN(Recommender):
    """Item-item nearest neighbours from ``implicit`` (cosine or BM25 similarity, K neighbours per item).

    scores = X_u · S, S the sparse items x items similarity (row = source item).
    """

    name = "itemknn"

    def _fit(self, x):
        k = int(self.params.get("K", 100))
        kind = self.params.get("similarity", "cosine")
        cls = {"cosine": CosineRecommender, "bm25": BM25Recommender}[kind]
        model = cls(K=k, num_threads=self.threads)
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Method expects CSR input")  # implicit converts internally
            model.fit(x, show_progress=False)
        self.S = sp.csr_matrix(model.similarity, dtype=np.float32)

    def scores(self, history, users=None):  # noqa: ARG002 - the interface's signature
        return np.asarray((history @ self.S).toarray())

    def _item_similarity(self, item):
        return np.asarray(self.S[item].toarray()).ravel()

    def state(self):
        return {"S_data": self.S.data, "S_indices": self.S.indices, "S_indptr": self.S.indptr}

    def load_state(self, arrays):
        self.S = sp.csr_matrix(
            (arrays["S_data"], arrays["S_indices"], arrays["S_indptr"]), shape=(self.n_items, self.n_items)
        )


# ------------------------------------------------------------------ matrix factorisation (implicit)


class _ImplicitMF(Recommender):
    """Shared code of the ``implicit`` matrix-factorisation models (factors in ``user_factors``/``item_factors``)."""

    def _new_model(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, x):
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; BLAS threads would oversubscribe
            self._model = self._new_model()  # (implicit checks the BLAS threads when the model is created)
            self._model.fit(x, show_progress=False)

    @property
    def user_factors(self) -> np.ndarray:
        return np.asarray(self._model.user_factors)

    @property
    def item_factors(self) -> np.ndarray:
        return np.asarray(self._model.item_factors)

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        """Factors (b x f) for users unknown to the model, from their interaction rows."""
        raise NotImplementedError

    def user_vectors(self, history: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        vecs = np.empty((history.shape[0], self.item_factors.shape[1]), np.float32)
        known = users >= 0
        if known.any():
            vecs[known] = self.user_factors[users[known]]
        if (~known).any():
            vecs[~known] = self.fold_in(history[np.flatnonzero(~known)])
        return vecs

    def scores(self, history, users=None):
        users = self._users(history, users)
        return self.user_vectors(history, users) @ self.item_factors.T

    def recommend(self, history, k=10, users=None, filter_seen=True, batch_size=2048):  # noqa: ARG002 - the interface's signature
        """Known users through ``implicit``'s own ``recommend`` (its multi-threaded top-k), with the arguments
        it needs: the users' indices and *their* rows as CSR; unknown users through :meth:`fold_in`."""
        history = check_user_items(history, n_items=self.n_items, what="history")
        users = self._users(history, users)
        k = min(k, self.n_items)
        idx = np.full((history.shape[0], k), -1, np.int64)
        val = np.full((history.shape[0], k), NEG_INF, np.float32)
        known = np.flatnonzero(users >= 0)
        if known.size:
            ids, sc = self._model.recommend(users[known], history[known], N=k, filter_already_liked_items=filter_seen)
            idx[known, : ids.shape[1]], val[known, : ids.shape[1]] = ids, sc
        unknown = np.flatnonzero(users < 0)
        if unknown.size:
            h = history[unknown]
            ui, us = top_k(self.fold_in(h) @ self.item_factors.T, k, h if filter_seen else None)
            idx[unknown], val[unknown] = ui, us
        bad = ~np.isfinite(val) | (val < -1e30)
        idx[bad], val[bad] = -1, NEG_INF
        return idx, val

    def _item_similarity(self, item):
        v = self.item_factors
        norms = np.linalg.norm(v, axis=1) + 1e-9
        return (v @ v[item]) / (norms * norms[item])

    def state(self):
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def load_state(self, arrays):
        with threadpool_limits(1, "blas"):
            self._model = self._new_model()
        self._model.user_factors = np.ascontiguousarray(arrays["user_factors"], dtype=np.float32)
        self._model.item_factors = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)


class ALS(_ImplicitMF):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) from ``implicit``; confidence = alpha · value."""

    name = "als"

    def _new_model(self):
        p = self.params
        return AlternatingLeastSquares(
            factors=int(p.get("factors", 16)),
            regularization=float(p.get("regularization", 0.1)),
            alpha=float(p.get("alpha", 5.0)),
            iterations=int(p.get("iterations", 15)),
            random_state=self.seed,
            num_threads=self.threads,
        )

    def fold_in(self, history):
        """Exact ALS user solve against the fixed item factors (``implicit``'s ``recalculate_user``)."""
        with threadpool_limits(1, "blas"):
            return self._model.recalculate_user(np.arange(history.shape[0]), sp.csr_matrix(history))


class BPR(_ImplicitMF):
    """Bayesian Personalised Ranking (Rendle et al. 2009) from ``implicit`` (last factor column = item bias)."""

    name = "bpr"

    def _new_model(self):
        p = self.params
        return BayesianPersonalizedRanking(
            factors=int(p.get("factors", 100)),
            learning_rate=float(p.get("learning_rate", 0.01)),
            regularization=float(p.get("regularization", 0.01)),
            iterations=int(p.get("iterations", 100)),
            random_state=self.seed,
            num_threads=self.threads,
        )

    def fold_in(self, history):
        """BPR has no closed-form user solve: use the mean factor of the user's items (bias column = 1)."""
        h = sp.csr_matrix(history > 0, dtype=np.float32)
        counts = np.maximum(np.asarray(h.sum(axis=1)).ravel(), 1.0)
        vecs = np.asarray(h @ self.item_factors) / counts[:, None]
        vecs[:, -1] = 1.0
        return vecs.astype(np.float32)


# ------------------------------------------------------------------ Spark MLlib ALS (past one machine)

SPARK_DEFAULT_CONF = {
    "spark.app.name": "mlref-recommender-als",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "2g",  # local mode: the driver is the executor (read only when the JVM starts)
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def spark_session(conf: dict[str, str] | None = None, threads: int = 2) -> Any:
    """The process's SparkSession (created on first use, then reused: the JVM starts once per process).

    ``conf`` is applied over :data:`SPARK_DEFAULT_CONF`; ``spark.master`` defaults to ``local[threads]``. Point
    it at a cluster with ``{"spark.master": "spark://host:7077"}`` (or ``yarn``, ``k8s://...``) plus the
    executor settings the cluster needs. Raises :class:`ImportError` naming the package when pyspark is missing.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - pyspark is in requirements/main.txt
        raise ImportError("--engine spark needs pyspark (pip install -r requirements/main.txt) and Java 17") from exc
    settings = {**SPARK_DEFAULT_CONF, "spark.master": f"local[{threads}]", **(conf or {})}
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, str(value))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_als_params(params: dict[str, Any], nnz: int, active_users: int) -> dict[str, Any]:
    """Spark MLlib ALS arguments for the :class:`ALS` hyper-parameter fields (see :class:`SparkALS`): ``nnz``
    training interactions over ``active_users`` users with at least one of them set ``regParam`` (ALS-WR scales
    the penalty by each user's count, so it is divided by the mean count). Both Spark paths call this."""
    mean_count = nnz / max(1, active_users)
    return {
        "rank": int(params.get("factors", 16)),
        "maxIter": int(params.get("iterations", 15)),
        "regParam": float(params.get("regularization", 0.1)) / max(mean_count, 1e-12),
        "alpha": max(0.0, float(params.get("alpha", 5.0)) - 1.0),
    }


class SparkALS(ALS):
    """Implicit-feedback ALS trained by Spark MLlib (``pyspark.ml.recommendation.ALS``, ``implicitPrefs=True``),
    served like :class:`ALS` from its factors (numpy arrays in ``model.npz``: serving needs no JVM).

    The same hyper-parameter fields as :class:`ALS`, mapped to Spark's formulation of Hu et al. so that equal
    settings give comparable models: Spark's confidence is ``1 + alpha_s · r`` (implicit's is ``alpha · r``), so
    ``alpha_s = alpha - 1`` gives the same confidence on binary data; Spark scales the L2 penalty of each user
    and item by its number of interactions (ALS-WR), so ``regParam = regularization / mean interactions per
    user``. Fold-in of a new user solves Spark's own normal equation (:meth:`fold_in`). Selected with
    ``engine: spark`` (``train --engine spark``); ``spark_conf`` in the params sets the session
    (:func:`spark_session`). Both are stored with the model's params, so a retrain reproduces the recipe.
    """

    name = "als"
    engine = "spark"

    def _spark_params(self, x: sp.csr_matrix) -> dict[str, Any]:
        return spark_als_params(self.params, x.nnz, x.shape[0])

    def _fit(self, x):
        with warnings.catch_warnings():  # pyspark 4.x warns on pandas 3; the Arrow paths used here do not touch it
            warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
            self._fit_spark(x)

    def _fit_spark(self, x: sp.csr_matrix) -> None:
        import pyarrow as pa

        session = spark_session(self.params.get("spark_conf"), self.threads)
        coo = x.tocoo()
        table = pa.table(
            {
                "u": coo.row.astype(np.int32),
                "i": coo.col.astype(np.int32),
                "r": coo.data.astype(np.float32),
            }
        )
        self._fit_frame(session.createDataFrame(table), x.shape[0], x.shape[1], nnz=x.nnz, active_users=x.shape[0])

    def fit_frame(self, frame: Any, n_users: int, n_items: int, *, nnz: int, active_users: int) -> SparkALS:
        """Train on a Spark DataFrame of ``(u int, i int, r float)`` rows (dense indices ``< n_users``/``< n_items``)
        that never leaves the cluster: the Spark-native path (:mod:`apps.recommender.spark_native`). ``nnz`` and
        ``active_users`` (users with at least one row) set the regularisation exactly as :meth:`fit` does from a
        matrix; users or items without rows get zero factors. Only the factors come back to the driver."""
        if nnz == 0:
            raise ShapeError("the interactions frame is empty")
        self.n_users, self.n_items = int(n_users), int(n_items)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
            self._fit_frame(frame, n_users, n_items, nnz=nnz, active_users=active_users)
        self.fit_seconds = time.perf_counter() - t0
        log.info(
            "%s (spark) fitted on %d users x %d items (%d rows) in %.2fs",
            self.name,
            n_users,
            n_items,
            nnz,
            self.fit_seconds,
        )
        return self

    def _fit_frame(self, frame: Any, n_users: int, n_items: int, *, nnz: int, active_users: int) -> None:
        from pyspark.ml.recommendation import ALS as SparkMLlibALS

        self.spark_params = spark_als_params(self.params, nnz, active_users)
        # blocks = the cluster's task slots (Spark's default 10 is 100 tiny tasks per iteration on 1-2 local cores);
        # partitioning only, the same least-squares problems are solved
        blocks = max(1, int(frame.sparkSession.sparkContext.defaultParallelism))
        als = SparkMLlibALS(
            **self.spark_params,
            numUserBlocks=blocks,
            numItemBlocks=blocks,
            implicitPrefs=True,
            userCol="u",
            itemCol="i",
            ratingCol="r",
            seed=self.seed,
            nonnegative=False,
        )
        fitted = als.fit(frame)
        users = _factor_array(fitted.userFactors, n_users, self.spark_params["rank"])
        items = _factor_array(fitted.itemFactors, n_items, self.spark_params["rank"])
        with threadpool_limits(1, "blas"):
            self._model = self._new_model()
        self._model.user_factors, self._model.item_factors = users, items
        self.reg_param = float(self.spark_params["regParam"])

    def fold_in(self, history):
        """Spark's implicit normal equation for each new user, against the fixed item factors Y:
        ``(YᵀY + Σᵢ (cᵢ - 1) yᵢyᵢᵀ + λ·nᵤ·I) x = Σᵢ cᵢ yᵢ``, cᵢ = 1 + alpha_s · rᵢ, over the user's items."""
        y = self.item_factors.astype(np.float64)
        yty = y.T @ y
        alpha = max(0.0, float(self.params.get("alpha", 5.0)) - 1.0)
        reg = self.reg_param
        h = sp.csr_matrix(history, dtype=np.float64)
        out = np.zeros((h.shape[0], y.shape[1]), np.float32)
        for row in range(h.shape[0]):
            cols = h.indices[h.indptr[row] : h.indptr[row + 1]]
            vals = h.data[h.indptr[row] : h.indptr[row + 1]]
            keep = vals > 0
            cols, conf = cols[keep], 1.0 + alpha * vals[keep]
            if cols.size == 0:
                continue
            yi = y[cols]
            a = yty + (yi.T * (conf - 1.0)) @ yi + reg * cols.size * np.eye(y.shape[1])
            out[row] = np.linalg.solve(a, yi.T @ conf)
        return out

    def state(self):
        return {**super().state(), "reg_param": np.array([self.reg_param], np.float64)}

    def load_state(self, arrays):
        super().load_state(arrays)
        self.reg_param = float(arrays["reg_param"][0])


def _factor_array(frame: Any, n: int, rank: int) -> np.ndarray:
    """Spark's ``(id, features)`` factor DataFrame as a dense (n, rank) float32 array indexed by id (0 where
    Spark has no row)."""
    table = frame.toArrow()
    out = np.zeros((n, rank), np.float32)
    ids = table.column("id").to_numpy()
    feats = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    out[ids] = feats.reshape(len(ids), rank)
    return out


MODEL_CLASSES: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (ALS, BPR, ItemKNN, EASE, MostPopular, RandomRecommender)
}
# Models with more than one implementation, chosen by the ``engine`` entry of their params (default ENGINE).
ENGINE_CLASSES: dict[str, dict[str, type[Recommender]]] = {"als": {"implicit": ALS, "spark": SparkALS}}


def make_model(
    name: str, params: dict[str, Any] | None = None, *, seed: int = 42, threads: int | None = None
) -> Recommender:
    """A fresh, unfitted model by name (``als``, ``bpr``, ``itemknn``, ``ease``, ``popular``, ``random``); the
    ``engine`` entry of ``params`` picks the implementation (``als``: ``implicit`` or ``spark``)."""
    if name not in MODEL_CLASSES:
        raise ValueError(f"unknown model {name!r}; choose one of {list(MODEL_CLASSES)}")
    params = params or {}
    engines = ENGINE_CLASSES.get(name, {ENGINE: MODEL_CLASSES[name]})
    engine = params.get("engine", ENGINE)
    if engine not in engines:
        raise ValueError(f"model {name!r} has no engine {engine!r}; engines: {list(engines)}")
    return engines[engine](seed=seed, threads=threads, **params)


# ------------------------------------------------------------------ the saved artifact


@dataclass
class Recommendation:
    """One answer: ranked item ids with scores, and how they were produced."""

    items: list[str]
    scores: list[float]
    strategy: str  # "personalized" (known user) | "fold_in" (history given) | "popular" (nothing known)
    known_user: bool = False
    unknown_items: list[str] = field(default_factory=list)


@dataclass
class RecommenderBundle:
    """Model + id maps + training interactions + item metadata: everything needed to serve."""

    model: Recommender
    users: IdMap
    items: IdMap
    user_items: sp.csr_matrix  # training interactions, users x items (the seen filter and known histories)
    item_meta: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[TITLE, GENRES]))
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_items = check_user_items(self.user_items, len(self.users), len(self.items), "bundle user_items")
        self.popularity = np.asarray((self.user_items > 0).sum(axis=0)).ravel()
        self._popular_order = np.argsort(-self.popularity, kind="stable")
        # training popularity percentile per item in (0, 1]: the unit of the popularity-bias / drift statistics
        self.popularity_percentile = pd.Series(self.popularity).rank(pct=True).to_numpy()

    # -- queries
    def popular(self, k: int, exclude: np.ndarray | None = None) -> tuple[list[str], list[float]]:
        order = self._popular_order
        if exclude is not None and exclude.size:
            order = order[~np.isin(order, exclude)]
        top = order[:k]
        return [str(x) for x in self.items.ids[top]], [float(x) for x in self.popularity[top]]

    def _to_ids(self, idx: np.ndarray, val: np.ndarray) -> tuple[list[str], list[float]]:
        ok = idx >= 0
        return [str(x) for x in self.items.ids[idx[ok]]], [float(x) for x in val[ok]]

    def recommend_users(self, user_ids: list[str], k: int = 10, *, filter_seen: bool = True) -> list[Recommendation]:
        """Recommendations for users by id; unknown users get the most popular items (strategy ``popular``)."""
        uidx = self.users.index_of(user_ids)
        out: list[Recommendation | None] = [None] * len(user_ids)
        known = np.flatnonzero(uidx >= 0)
        if known.size:
            idx, val = self.model.recommend(self.user_items[uidx[known]], k, users=uidx[known], filter_seen=filter_seen)
            for row, pos in enumerate(known):
                items, scores = self._to_ids(idx[row], val[row])
                out[pos] = Recommendation(items, scores, "personalized", known_user=True)
        for pos in np.flatnonzero(uidx < 0):
            items, scores = self.popular(k)
            out[pos] = Recommendation(items, scores, "popular", known_user=False)
        return out  # type: ignore[return-value]

    def recommend_history(self, history: list[str], k: int = 10, *, filter_seen: bool = True) -> Recommendation:
        """Cold start: recommendations for an anonymous user from the items they interacted with."""
        hist, unknown = history_matrix([list(map(str, history))], self.items)
        if hist.nnz == 0:
            items, scores = self.popular(k)
            return Recommendation(items, scores, "popular", unknown_items=unknown[0])
        idx, val = self.model.recommend(hist, k, users=np.array([-1]), filter_seen=filter_seen)
        items, scores = self._to_ids(idx[0], val[0])
        return Recommendation(items, scores, "fold_in", unknown_items=unknown[0])

    def similar_items(self, item_id: str, k: int = 10) -> tuple[list[str], list[float]]:
        """Items similar to ``item_id``; raises KeyError when the item is unknown."""
        i = int(self.items.index_of([str(item_id)])[0])
        if i < 0:
            raise KeyError(item_id)
        idx, val = self.model.similar_items(i, k)
        return self._to_ids(idx, val)

    def item_info(self, item_id: str) -> dict[str, str]:
        """Title/genres when the metadata knows the item, else {}."""
        if item_id in self.item_meta.index:
            row = self.item_meta.loc[item_id]
            return {c: str(row[c]) for c in (TITLE, GENRES) if c in row.index and pd.notna(row[c])}
        return {}

    # -- persistence
    def save(self, path: str | Path) -> Path:
        """Write the bundle as a directory: meta.json, ids.json, seen.npz, model.npz, items.csv."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "model": self.model.name,
            "params": self.model.params,
            "seed": self.model.seed,
            "n_users": len(self.users),
            "n_items": len(self.items),
            "fit_seconds": self.model.fit_seconds,
            "info": self.info,
        }
        (path / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        (path / "ids.json").write_text(json.dumps({"users": self.users.to_list(), "items": self.items.to_list()}))
        ui = self.user_items
        np.savez_compressed(path / "seen.npz", data=ui.data, indices=ui.indices, indptr=ui.indptr)
        np.savez_compressed(path / "model.npz", **self.model.state())
        meta_items = self.item_meta[self.item_meta.index.isin(self.items.ids)]
        meta_items.rename_axis(ITEM).reset_index().to_csv(path / "items.csv", index=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RecommenderBundle:
        """Inverse of :meth:`save` (arrays loaded with ``allow_pickle=False``)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: bundle format {meta.get('format_version')} != {FORMAT_VERSION}")
        ids = json.loads((path / "ids.json").read_text())
        users, items = IdMap(np.asarray(ids["users"], dtype=object)), IdMap(np.asarray(ids["items"], dtype=object))
        with np.load(path / "seen.npz", allow_pickle=False) as z:
            ui = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(len(users), len(items)))
        model = make_model(meta["model"], meta["params"], seed=meta["seed"])
        model.n_users, model.n_items, model.fit_seconds = len(users), len(items), meta.get("fit_seconds", 0.0)
        with np.load(path / "model.npz", allow_pickle=False) as z:
            model.load_state({k: z[k] for k in z.files})
        item_meta = pd.read_csv(path / "items.csv", dtype=str).set_index(ITEM)
        return cls(model, users, items, ui, item_meta, meta.get("info", {}))
