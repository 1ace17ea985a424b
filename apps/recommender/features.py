"""From an interactions frame to the user x item matrix the models consume, and back to ids.

The one orientation used everywhere in this app is **users x items** (rows = users), which is what
``implicit`` >= 0.5 expects in ``fit(user_items)`` and ``recommend(userid, user_items[userid])``. The id <-> index
maps live in :class:`IdMap`; building the matrix with a map from training keeps the columns aligned for new data
(unknown ids are dropped and counted, never silently re-indexed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from apps.recommender.data import ITEM, USER, WEIGHT

log = logging.getLogger(__name__)

WEIGHTINGS = ("none", "bm25", "tfidf")


@dataclass(frozen=True)
class IdMap:
    """Ordered external ids <-> contiguous indices 0..n-1."""

    ids: np.ndarray  # (n,) object/str

    @classmethod
    def fit(cls, values: pd.Series | np.ndarray) -> IdMap:
        """Ids in first-seen order."""
        return cls(np.asarray(pd.unique(np.asarray(values, dtype=object)), dtype=object))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def _index(self) -> pd.Index:
        idx = self.__dict__.get("_idx")
        if idx is None:
            idx = pd.Index(self.ids)
            object.__setattr__(self, "_idx", idx)
        return idx

    def index_of(self, values) -> np.ndarray:
        """Indices of ``values`` (-1 where unknown)."""
        return self._index.get_indexer(np.asarray(values, dtype=object))

    def __contains__(self, value: object) -> bool:
        return value in self._index

    def to_list(self) -> list[str]:
        return [str(x) for x in self.ids]


def build_matrix(
    df: pd.DataFrame, users: IdMap, items: IdMap, *, binary: bool = True, log_unknown: bool = True
) -> sp.csr_matrix:
    """CSR (len(users) x len(items)) float32 of interaction weights (1 where ``binary``); unknown ids dropped."""
    u = users.index_of(df[USER])
    i = items.index_of(df[ITEM])
    keep = (u >= 0) & (i >= 0)
    if log_unknown and not keep.all():
        log.info("dropped %d interactions with users/items unknown to the id map", int((~keep).sum()))
    w = np.ones(int(keep.sum()), np.float32) if binary else df[WEIGHT].to_numpy(np.float32)[keep]
    m = sp.csr_matrix((w, (u[keep], i[keep])), shape=(len(users), len(items)), dtype=np.float32)
    m.sum_duplicates()
    if binary:
        m.data[:] = 1.0
    return m


def history_matrix(histories: list[list[str]], items: IdMap) -> tuple[sp.csr_matrix, list[list[str]]]:
    """CSR (len(histories) x len(items)) binary rows from item-id lists; also returns the unknown ids per row."""
    indptr, indices, unknown = [0], [], []
    for hist in histories:
        idx = items.index_of(list(hist)) if hist else np.array([], dtype=np.int64)
        unknown.append([str(h) for h, j in zip(hist, idx, strict=True) if j < 0])
        known = np.unique(idx[idx >= 0])
        indices.extend(known.tolist())
        indptr.append(len(indices))
    data = np.ones(len(indices), np.float32)
    m = sp.csr_matrix((data, np.asarray(indices, np.int32), np.asarray(indptr)), shape=(len(histories), len(items)))
    return m, unknown


def weight_matrix(user_items: sp.csr_matrix, scheme: str = "none") -> sp.csr_matrix:
    """Confidence weighting of a users x items matrix: ``none``, ``bm25`` (K1=100, B=0.8) or ``tfidf``.

    implicit's weighting functions weight the *rows* of an items x users matrix, so the matrix is transposed
    there and back; the result keeps the users x items orientation.
    """
    if scheme == "none":
        return user_items
    if scheme not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {scheme!r}; choose one of {WEIGHTINGS}")
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    item_users = user_items.T.tocsr()
    weighted = bm25_weight(item_users, K1=100, B=0.8) if scheme == "bm25" else tfidf_weight(item_users)
    return sp.csr_matrix(weighted.T, dtype=np.float32)
