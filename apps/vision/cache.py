"""The decoded-image cache on disk: decode a folder once into one flat uint8 file, then read batches from it.

Why: decoded images in memory cost ``N x 3 x S x S`` bytes (50,000 CIFAR images at 32 px: 154 MB; 100,000 images at
224 px: 15 GB), a wall for large folders and large sizes. The disk cache keeps them in a file the kernel's page cache
holds as far as memory allows; the process itself only holds the batch it is reading.

Modes (``Config.cache``, flag ``--cache``):

- ``memory``: decode into one tensor in RAM; a set that would take more than :data:`MEMORY_FRACTION` of the
  available memory is refused up front with the bytes it needs (:class:`CacheTooLarge`, never an OOM kill);
- ``disk``: decode once into ``<cache_dir>/<key>.vimg`` and read batches from it (:class:`DiskImages`);
- ``auto`` (default): ``disk`` when the decoded set would exceed :data:`AUTO_FRACTION` of the available memory.

File layout (one file, written to a temporary name, fsynced, then renamed: a reader sees a complete file or none)::

    images  uint8[N, 3, S, S]  (C order, offset 0: image i starts at i * 3 * S * S)
    labels  int64[N]
    sizes   int64[N, 2]        original (width, height)
    meta    JSON (utf-8): format, shape, dtype, offsets, source fingerprint, classes, paths, skipped files
    trailer MAGIC (8 bytes) + len(meta) (uint64 little endian)

A file whose trailer, length or source fingerprint (names, sizes and modification times of the source's files; an
archive's size and mtime) does not match is stale or truncated: it is rebuilt, never served. Batches are read with
``pread`` at sorted offsets (contiguous runs merged into one read), so reads stay sequential-ish and the file's pages
live in the page cache, not in the process's resident memory (an ``mmap`` of the file would count every page touched
in RSS). :meth:`DiskImages.memmap` gives the same bytes as a read-only ``numpy.memmap`` for code that wants one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.data import DataError, atomic_path
from common.scaling import MemoryRefused, available_memory

log = logging.getLogger(__name__)

MODES = ("memory", "disk", "auto")
FORMAT = 1
MAGIC = b"MLRFVIMG"
TRAILER = len(MAGIC) + 8
SUFFIX = ".vimg"
MEMORY_FRACTION = 0.8  # memory mode refuses a set larger than this share of the available memory
AUTO_FRACTION = 0.5  # auto picks the disk cache above this share
STALE_TMP_S = 600.0  # a temporary file untouched this long is a dead writer's (killed mid-write): removed


class CacheTooLarge(MemoryRefused):
    """The decoded set does not fit in memory (exit code 2; the message names the bytes and ``--cache disk``)."""


def image_bytes(image_size: int) -> int:
    """Bytes of one decoded image (uint8, 3 x S x S)."""
    return 3 * image_size * image_size


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def choose_mode(mode: str, n_images: int, image_size: int, *, available: int | None = None) -> str:
    """``memory`` or ``disk`` for ``n_images`` decoded at ``image_size`` px under ``mode`` (memory/disk/auto).

    Raises :class:`CacheTooLarge` for ``memory`` when the set needs more than :data:`MEMORY_FRACTION` of
    ``available`` bytes (default: :func:`available_memory`)."""
    if mode not in MODES:
        raise DataError(f"cache: {mode!r}; use one of {', '.join(MODES)}")
    if mode == "disk":
        return "disk"
    need = n_images * image_bytes(image_size)
    avail = available_memory() if available is None else available
    if mode == "auto":
        chosen = "disk" if need > AUTO_FRACTION * avail else "memory"
        log.info(
            "cache auto: %d images at %d px need %s of %s available: %s",
            n_images,
            image_size,
            _gb(need),
            _gb(avail),
            chosen,
        )
        return chosen
    if need > MEMORY_FRACTION * avail:
        raise CacheTooLarge(
            f"cache memory: {n_images} images at {image_size} px need {need} bytes ({_gb(need)}: {n_images} x 3 x "
            f"{image_size} x {image_size}) in memory, more than {MEMORY_FRACTION:.0%} of the {avail} bytes "
            f"({_gb(avail)}) available; use --cache disk (decoded once into a file, read in batches)"
        )
    return "memory"


# ------------------------------------------------------------------------------------------ naming and freshness


def fingerprint(root: Path) -> dict[str, Any]:
    """What the cache was built from: an archive's size and mtime, or a sha256 over every file under a folder
    (relative path, size, mtime in ns; links not followed). Any added, removed, resized or touched file changes it."""
    st = root.stat()
    if root.is_file():
        return {"kind": "file", "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    h = hashlib.sha256()
    n = 0
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            p = Path(folder) / name
            try:
                s = p.lstat()
            except OSError:
                continue
            h.update(f"{p.relative_to(root)}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
            n += 1
    return {"kind": "folder", "files": n, "sha256": h.hexdigest()}


def cache_path(
    cache_dir: Path, root: Path, *, image_size: int, classes: list[str] | None, labelled: bool, max_pixels: int
) -> Path:
    """``<cache_dir>/<name>-<S>px-<hash>.vimg``: one file per source and decoding settings."""
    spec = json.dumps([str(root.resolve()), image_size, classes, labelled, max_pixels, FORMAT])
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{root.name.split('.')[0]}-{image_size}px-{key}{SUFFIX}"


def read_meta(path: Path) -> dict[str, Any] | None:
    """The file's JSON metadata, or None when it is missing, truncated or not a cache file of this format."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if size < TRAILER:
                return None
            fh.seek(size - TRAILER)
            trailer = fh.read(TRAILER)
            if trailer[: len(MAGIC)] != MAGIC:
                return None
            n_meta = int.from_bytes(trailer[len(MAGIC) :], "little")
            if n_meta > size - TRAILER:
                return None
            fh.seek(size - TRAILER - n_meta)
            meta = json.loads(fh.read(n_meta))
    except (OSError, ValueError):
        return None
    n, shape = meta.get("n"), meta.get("shape")
    size_px = meta.get("image_size")
    if meta.get("format") != FORMAT or not isinstance(n, int) or shape != [n, 3, size_px, size_px]:
        return None
    expected = n * image_bytes(meta["image_size"]) + n * 8 + n * 16 + n_meta + TRAILER
    return meta if expected == size else None


def valid(path: Path, source: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata of a complete cache file built from ``source`` (a :func:`fingerprint`), else None (logged)."""
    if not path.exists():
        return None
    meta = read_meta(path)
    if meta is None:
        log.warning("cache %s is truncated or damaged: rebuilding it", path)
    elif meta.get("source") != source:
        log.warning("cache %s is stale (the source changed since it was built): rebuilding it", path)
        meta = None
    return meta


# ------------------------------------------------------------------------------------------ writing


def _remove_dead_temps(path: Path) -> None:
    """Temporary files of writers killed mid-write (untouched for :data:`STALE_TMP_S`): never read, only removed."""
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
                log.info("removed %s (a cache write that never finished)", tmp)
        except OSError:
            pass


def write_cache(
    path: Path,
    decoded: Iterator[tuple[str, int, np.ndarray | None, tuple[int, int] | None, str | None]],
    *,
    image_size: int,
    classes: list[str],
    source: dict[str, Any],
    max_images: int,
) -> dict[str, Any]:
    """Stream ``decoded`` (``(path, label, uint8[3, S, S] or None, (w, h), problem)`` per file) into ``path``.

    One image in memory at a time. Written to a temporary name beside ``path``, fsynced, then renamed over it;
    an interrupted write leaves only the temporary file, which no reader opens. ``max_images`` (an upper bound of
    the images to come) is checked against the free disk space first. Returns the metadata written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(path)
    need = max_images * image_bytes(image_size)
    free = _free_bytes(path.parent)
    if need > free:
        raise DataError(
            f"cache disk: {max_images} images at {image_size} px need up to {need} bytes ({_gb(need)}) in "
            f"{path.parent}, which has {free} bytes free; use --cache-dir on a larger disk"
        )
    labels: list[int] = []
    sizes: list[tuple[int, int]] = []
    paths: list[str] = []
    problems: list[dict[str, str]] = []
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for where, label, arr, wh, problem in decoded:
            if problem is not None or arr is None or wh is None:
                problems.append({"path": where, "reason": problem or "unreadable"})
                continue
            fh.write(memoryview(np.ascontiguousarray(arr, dtype=np.uint8)))
            labels.append(label)
            sizes.append(wh)
            paths.append(where)
        n = len(labels)
        fh.write(np.asarray(labels, dtype=np.int64).tobytes())
        fh.write(np.asarray(sizes, dtype=np.int64).reshape(-1, 2).tobytes())
        meta = {
            "format": FORMAT,
            "n": n,
            "image_size": image_size,
            "shape": [n, 3, image_size, image_size],
            "dtype": "uint8",
            "layout": "NCHW",
            "labels_offset": n * image_bytes(image_size),
            "sizes_offset": n * image_bytes(image_size) + 8 * n,
            "source": source,
            "classes": list(classes),
            "paths": paths,
            "problems": problems,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        blob = json.dumps(meta).encode()
        fh.write(blob + MAGIC + len(blob).to_bytes(8, "little"))
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(path.parent)
    log.info("cache %s: %d images at %d px (%s) written", path, n, image_size, _gb(n * image_bytes(image_size)))
    return meta


def _free_bytes(folder: Path) -> int:
    import shutil

    return shutil.disk_usage(folder).free


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (a crash after it keeps the new name)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ reading


class DiskImages:
    """Read-only ``uint8[N, 3, S, S]`` images in a cache file, used where the pipeline uses an image tensor.

    Indexing with an int gives one image; with a slice, an index tensor/array/list or a boolean mask, a new
    in-memory tensor of those images (read with :meth:`gather`). :meth:`select` is a lazy subset (no read), what
    a train/validation split keeps. ``split(n)`` yields consecutive batches (what evaluation iterates over).
    Picklable (a DataLoader worker reopens the file)."""

    def __init__(self, path: Path, n_total: int, image_size: int, rows: np.ndarray | None = None) -> None:
        self.path, self.n_total, self.image_size = Path(path), n_total, image_size
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.row_bytes = image_bytes(image_size)
        self._fd: int | None = None

    # --- tensor-like surface
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), 3, self.image_size, self.image_size))

    dtype = torch.uint8
    ndim = 4

    def __len__(self) -> int:
        return self.n_total if self.rows is None else len(self.rows)

    def __getitem__(self, key: Any) -> torch.Tensor:
        scalar_tensor = isinstance(key, torch.Tensor) and key.ndim == 0 and key.dtype != torch.bool
        if isinstance(key, int | np.integer) or scalar_tensor:
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"image {i} out of range for {len(self)} images")
            return self.gather(np.array([i % len(self)]))[0]
        if isinstance(key, slice):
            return self.gather(np.arange(len(self))[key])
        idx = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return self.gather(idx.astype(np.int64, copy=False))

    def split(self, batch: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), batch):
            yield self.gather(np.arange(start, min(start + batch, len(self))))

    def materialize(self) -> torch.Tensor:
        """Every image in memory (``len(self) * 3 * S * S`` bytes): for small subsets only."""
        return self.gather(np.arange(len(self)))

    def float(self) -> torch.Tensor:
        return self.materialize().float()

    def contiguous(self, **_: Any) -> torch.Tensor:
        return self.materialize()

    def numpy(self) -> np.ndarray:
        return self.materialize().numpy()

    def select(self, idx: np.ndarray) -> DiskImages:
        """The images at positions ``idx`` of this set, without reading them."""
        idx = np.asarray(idx, dtype=np.int64)
        rows = idx if self.rows is None else self.rows[idx]
        return DiskImages(self.path, self.n_total, self.image_size, rows)

    def memmap(self) -> np.memmap:
        """All ``n_total`` stored images as a read-only ``numpy.memmap`` (pages touched count in RSS)."""
        shape = (self.n_total, 3, self.image_size, self.image_size)
        return np.memmap(self.path, dtype=np.uint8, mode="r", shape=shape)

    # --- reading
    def gather(self, idx: np.ndarray) -> torch.Tensor:
        """``uint8[len(idx), 3, S, S]``: the images at positions ``idx``, read in sorted file order with runs of
        consecutive images merged into one ``pread`` each, then put back in ``idx``'s order."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        idx = idx % max(len(self), 1)
        rows = idx if self.rows is None else self.rows[idx]
        unique, inverse = np.unique(rows, return_inverse=True)
        buf = np.empty((len(unique), 3, self.image_size, self.image_size), dtype=np.uint8)
        flat = buf.reshape(len(unique), -1)
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(unique)], strict=True):
            self._read_into(memoryview(flat[a:b]).cast("B"), int(unique[a]) * self.row_bytes)
        out = buf if len(unique) == len(rows) and np.array_equal(unique, rows) else buf[inverse.reshape(-1)]
        return torch.from_numpy(out)

    def _read_into(self, view: memoryview, offset: int) -> None:
        fd = self._open()
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], offset + done)
            if got <= 0:
                raise DataError(f"cache {self.path}: unexpected end of file at byte {offset + done}; delete it")
            done += got

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"DiskImages({self.path.name}, {len(self)} of {self.n_total} images, {self.image_size} px)"


def open_cache(path: Path, meta: dict[str, Any]) -> tuple[DiskImages, np.ndarray, np.ndarray]:
    """(images, labels int64[N], sizes int64[N, 2]) of a valid cache file (``meta`` from :func:`valid`)."""
    n = meta["n"]
    with open(path, "rb") as fh:
        fh.seek(meta["labels_offset"])
        labels = np.frombuffer(fh.read(8 * n), dtype=np.int64).copy()
        sizes = np.frombuffer(fh.read(16 * n), dtype=np.int64).reshape(n, 2).copy()
    return DiskImages(path, n, meta["image_size"]), labels, sizes


def build_or_open(
    path: Path,
    source: dict[str, Any],
    decode: Callable[[], tuple[Iterator[Any], list[str], int]],
    *,
    image_size: int,
) -> tuple[DiskImages, np.ndarray, np.ndarray, dict[str, Any]]:
    """The cache at ``path`` if it is complete and built from ``source``, else built now from ``decode()``
    (``(decoded items, classes, upper bound of images)``). Returns (images, labels, sizes, metadata)."""
    meta = valid(path, source)
    if meta is None:
        items, classes, bound = decode()
        t0 = time.perf_counter()
        meta = write_cache(path, items, image_size=image_size, classes=classes, source=source, max_images=bound)
        log.info("cache %s built in %.1f s", path.name, time.perf_counter() - t0)
    else:
        log.info("cache %s: %d images at %d px (reused)", path, meta["n"], image_size)
    images, labels, sizes = open_cache(path, meta)
    return images, labels, sizes, meta
