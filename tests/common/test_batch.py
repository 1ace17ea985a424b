"""common.batch: chunked scoring (pandas and Dask), atomic output on failure and on SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.batch import BatchResult, score_file, score_file_dask

REPO = Path(__file__).resolve().parents[2]
N = 1000


def _input_frame(n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n),
            "cat": rng.choice(["a", "bb", "ccc"], size=n),
        }
    )


def score(df: pd.DataFrame) -> pd.DataFrame:
    """A stand-in model: one score column per row, computed row-wise (so chunking cannot change it)."""
    return pd.DataFrame({"id": df["id"].to_numpy(), "score": df["x"].to_numpy() * 2 + df["cat"].str.len().to_numpy()})


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False, row_group_size=250)
    else:
        df.to_csv(path, index=False)
    return path


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _others(directory: Path, *keep: Path) -> list[str]:
    """Names in ``directory`` other than ``keep`` (and the autouse fixture's MLREF_HOME)."""
    return sorted(p.name for p in directory.iterdir() if p not in keep and p.name != "mlref-home")


@pytest.mark.parametrize(("src_ext", "dst_ext"), [(".csv", ".csv"), (".parquet", ".parquet"), (".csv", ".parquet")])
def test_chunked_equals_whole_frame(tmp_path, src_ext, dst_ext):
    df = _input_frame()
    src = _write(df, tmp_path / f"in{src_ext}")
    dst = tmp_path / "out" / f"scores{dst_ext}"
    res = score_file(src, dst, score, chunksize=128, progress=False)
    assert isinstance(res, BatchResult)
    assert (res.rows, res.chunks, res.output) == (N, 8, dst)
    expected = score(_read(src))
    pd.testing.assert_frame_equal(_read(dst), expected, check_dtype=False)
    assert _others(dst.parent, dst) == []


class Boom(RuntimeError):
    pass


def _failing_on(call: int):
    calls = {"n": 0}

    def fn(df: pd.DataFrame) -> pd.DataFrame:
        calls["n"] += 1
        if calls["n"] == call:
            raise Boom(f"chunk {call}")
        return score(df)

    return fn


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_failure_mid_file_leaves_no_output(tmp_path, ext):
    src = _write(_input_frame(), tmp_path / f"in{ext}")
    dst = tmp_path / f"new{ext}"
    with pytest.raises(Boom):
        score_file(src, dst, _failing_on(3), chunksize=100, progress=False)
    assert not dst.exists()
    assert _others(tmp_path, src) == [], "no temp file left"

    # an output from an earlier run survives a failed re-run untouched
    old = tmp_path / f"old{ext}"
    old.write_bytes(b"earlier run")
    with pytest.raises(Boom):
        score_file(src, old, _failing_on(3), chunksize=100, progress=False)
    assert old.read_bytes() == b"earlier run"
    assert _others(tmp_path, src, old) == []


def test_sigkill_mid_file_leaves_no_output(tmp_path):
    src = _write(_input_frame(), tmp_path / "in.csv")
    dst = tmp_path / "out.csv"
    marker = tmp_path / "chunk3.started"
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        from pathlib import Path
        from common.batch import score_file

        calls = 0

        def slow(df):
            global calls
            calls += 1
            if calls == 3:
                Path({str(marker)!r}).touch()
                time.sleep(120)
            return df

        score_file({str(src)!r}, {str(dst)!r}, slow, chunksize=100, progress=False)
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "scoring job exited early"
            assert time.monotonic() < deadline, "scoring job did not reach chunk 3"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not dst.exists()
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".batch-tmp")]
    assert len(stale) == 1  # the killed run's partial output, never at the output path

    # the next run publishes a complete file and clears the dead run's temp file
    res = score_file(src, dst, score, chunksize=100, progress=False)
    assert res.rows == N and not stale[0].exists()
    pd.testing.assert_frame_equal(pd.read_csv(dst), score(pd.read_csv(src)))


def test_score_fn_must_return_frame(tmp_path):
    src = _write(_input_frame(50), tmp_path / "in.csv")
    with pytest.raises(TypeError, match="DataFrame"):
        score_file(src, tmp_path / "o.csv", lambda df: df.to_numpy(), progress=False)
    with pytest.raises(ValueError, match="unsupported"):
        score_file(src, tmp_path / "o.xlsx", score, progress=False)


# ------------------------------------------------------------------ Dask


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        yield cluster


def test_dask_same_rows_as_pandas(tmp_path, dask_cluster):
    df = _input_frame()
    for ext, kwargs in (
        (".csv", {"blocksize": 8_000}),
        (".parquet", {"read_kwargs": {"split_row_groups": True}}),
    ):
        src = _write(df, tmp_path / f"in{ext}")
        ref = score_file(src, tmp_path / f"pandas{ext}", score, chunksize=128, progress=False)
        dst = tmp_path / f"dask{ext}"
        res = score_file_dask(src, dst, score, scheduler=dask_cluster.scheduler_address, progress=False, **kwargs)
        assert res.rows == ref.rows == N and res.chunks > 1, (ext, res)
        pd.testing.assert_frame_equal(_read(dst), _read(ref.output), check_dtype=False)


def test_dask_failure_leaves_no_output(tmp_path, dask_cluster):
    src = _write(_input_frame(), tmp_path / "in.csv")
    dst = tmp_path / "out.parquet"
    dst.write_bytes(b"earlier run")

    def bad(df: pd.DataFrame) -> pd.DataFrame:
        if (df["id"] == 600).any():
            raise Boom("partition with id 600")
        return score(df)

    with pytest.raises(Boom):
        score_file_dask(src, dst, bad, scheduler=dask_cluster.scheduler_address, blocksize=8_000, progress=False)
    assert dst.read_bytes() == b"earlier run"
    assert _others(tmp_path, src, dst) == []


# ------------------------------------------------------------------ bad input: one line, nothing written


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (input path, expected message) for every kind of input that must be refused up front."""
    good = _write(_input_frame(600), tmp_path / "good.parquet")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    header = tmp_path / "header.csv"
    header.write_text("id,x,cat\n")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    no_rows = tmp_path / "no_rows.parquet"
    _input_frame(0).to_parquet(no_rows, index=False)
    (tmp_path / "adir.csv").mkdir()
    return {
        "missing": (tmp_path / "nope.csv", "input file not found: .*nope.csv"),
        "directory": (tmp_path / "adir.csv", "adir.csv is a directory"),
        "empty": (empty, "empty.csv is empty: no header and no rows"),
        "header only": (header, "header.csv has a header but no rows"),
        "no rows": (no_rows, "no_rows.parquet has no rows"),
        "truncated parquet": (truncated, "truncated.parquet is not a readable parquet file"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "header only", "no rows", "truncated parquet"])
def test_bad_input_is_one_data_error_and_leaves_the_old_output(tmp_path: Path, case: str) -> None:
    from common.data import DataError

    src, message = _bad_inputs(tmp_path)[case]
    dst = tmp_path / "out.csv"
    dst.write_bytes(b"earlier run")
    with pytest.raises(DataError, match=message) as info:
        score_file(src, dst, score, chunksize=100, progress=False)
    assert "\n" not in str(info.value)
    assert dst.read_bytes() == b"earlier run"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".batch-tmp")]


def test_bad_arguments_are_data_errors(tmp_path: Path) -> None:
    from common.data import DataError

    src = _write(_input_frame(50), tmp_path / "in.csv")
    for chunksize in (0, -5, 2.5):
        with pytest.raises(DataError, match=f"chunksize must be a whole number >= 1, got {chunksize}"):
            score_file(src, tmp_path / "o.csv", score, chunksize=chunksize, progress=False)
    (tmp_path / "sub").mkdir()
    same = tmp_path / "sub" / ".." / "in.csv"  # another spelling of the input
    with pytest.raises(DataError, match="input and output are the same file"):
        score_file(src, same, score, progress=False)
    assert pd.read_csv(src).shape == (50, 3)  # the input was not touched
    with pytest.raises(DataError, match=r"output .* is a directory"):
        score_file(src, tmp_path / "sub", score, progress=False)
    assert not (tmp_path / "o.csv").exists()


def test_empty_input_allowed_on_request_gives_header_only_output(tmp_path: Path) -> None:
    header = tmp_path / "header.csv"
    header.write_text("id,x,cat\n")
    res = score_file(header, tmp_path / "o.parquet", score, progress=False, allow_empty=True)
    assert res.rows == 0 and list(pd.read_parquet(res.output).columns) == ["id", "score"]


def test_a_file_corrupt_after_its_first_chunks_fails_without_partial_output(tmp_path: Path) -> None:
    from common.data import DataError

    src = tmp_path / "in.csv"
    good = _input_frame(400).to_csv(index=False)
    src.write_text(good + '1,"unterminated quote\n' + good.split("\n", 1)[1])
    dst = tmp_path / "out.parquet"
    with pytest.raises(DataError, match=r"in\.csv could not be read to the end"):
        score_file(src, dst, score, chunksize=100, progress=False)
    assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".batch-tmp")]
