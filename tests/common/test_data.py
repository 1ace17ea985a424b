"""common.config and common.data: settings, seeding, fetch (offline errors, checksums, resume), schemas."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.config import get_settings, seed_everything
from common.data import (
    Column,
    DataError,
    DownloadError,
    Schema,
    atomic_path,
    fetch,
    fingerprint,
    read_table,
    write_table,
)


def test_settings_follow_environment(mlref_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = get_settings()
    assert s.home == mlref_home
    assert s.data_path == mlref_home / "data"
    assert s.tracking == f"sqlite:///{mlref_home.resolve() / 'mlflow.db'}"
    assert s.host == "127.0.0.1"
    monkeypatch.setenv("MLREF_TRACKING_URI", "http://127.0.0.1:5000")
    assert get_settings().tracking == "http://127.0.0.1:5000"


def test_seed_everything_makes_numpy_and_torch_repeatable() -> None:
    seed_everything(7)
    a = np.random.rand(3)
    seed_everything(7)
    assert np.array_equal(a, np.random.rand(3))
    torch = pytest.importorskip("torch")
    seed_everything(7)
    t = torch.rand(3)
    seed_everything(7)
    assert torch.equal(t, torch.rand(3))


@pytest.fixture
def file_server(tmp_path: Path):
    """A loopback HTTP server over tmp_path/www that honours Range requests."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):  # keep test output quiet
            pass

        def send_head(self):
            rng = self.headers.get("Range")
            path = Path(self.translate_path(self.path))
            if not rng or not path.is_file():
                return super().send_head()
            start = int(rng.split("=")[1].split("-")[0])
            data = path.read_bytes()[start:]
            self.send_response(206)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            import io

            return io.BytesIO(data)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_fetch_downloads_verifies_and_caches(file_server, mlref_home: Path) -> None:
    root, url = file_server
    payload = b"user,item\n1,2\n" * 1000
    (root / "d.csv").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    path = fetch(f"{url}/d.csv", digest, "sub/d.csv")
    assert path == mlref_home / "data" / "sub" / "d.csv"
    assert path.read_bytes() == payload
    (root / "d.csv").unlink()  # second call must not need the network
    assert fetch(f"{url}/d.csv", digest, "sub/d.csv") == path


def test_fetch_resumes_a_partial_download(file_server, mlref_home: Path) -> None:
    root, url = file_server
    payload = bytes(range(256)) * 100
    (root / "big.bin").write_bytes(payload)
    part = mlref_home / "data" / "big.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(payload[:1000])
    path = fetch(f"{url}/big.bin", hashlib.sha256(payload).hexdigest(), "big.bin")
    assert path.read_bytes() == payload
    assert not part.exists()


def test_fetch_checksum_mismatch_leaves_nothing(file_server, mlref_home: Path) -> None:
    root, url = file_server
    (root / "d.csv").write_bytes(b"tampered")
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        fetch(f"{url}/d.csv", "0" * 64, "d.csv")
    assert str(mlref_home / "data" / "d.csv") in str(err.value)
    assert not (mlref_home / "data" / "d.csv").exists()


def test_fetch_offline_error_says_where_to_put_the_file(mlref_home: Path) -> None:
    with pytest.raises(DownloadError) as err:
        fetch("http://127.0.0.1:9/ml-100k.zip", None, "ml-100k.zip", timeout=2)
    msg = str(err.value)
    assert "http://127.0.0.1:9/ml-100k.zip" in msg
    assert str(mlref_home / "data" / "ml-100k.zip") in msg
    assert "MLREF_DATA_DIR" in msg


SCHEMA = Schema(
    [
        Column("user", "str"),
        Column("item", "int"),
        Column("weight", "float", required=False, min=0),
        Column("when", "datetime", required=False),
        Column("kind", "str", required=False, allowed={"view", "buy"}),
    ]
)


def test_schema_coerces_valid_rows(tmp_path: Path) -> None:
    p = tmp_path / "ok.csv"
    p.write_text("user,item,weight,when,kind\nu1,3,1.5,2024-01-01,view\nu2,4,0,2024-01-02 10:00,buy\n")
    df = read_table(p, SCHEMA)
    assert df["item"].dtype == "int64"
    assert pd.api.types.is_datetime64_any_dtype(df["when"])
    assert df["user"].tolist() == ["u1", "u2"]


def test_schema_reports_every_bad_row_with_column_and_reason(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(
        "user,item,weight,when,kind\n"
        "u1,3,1.5,2024-01-01,view\n"
        "u2,x,1,2024-01-01,view\n"  # row 1: item not int
        "u3,4,-2,2024-01-01,view\n"  # row 2: negative weight
        "u4,5,1,yesterday-ish,view\n"  # row 3: bad date
        ",6,1,2024-01-01,steal\n"  # row 4: empty user, kind not allowed
    )
    with pytest.raises(DataError) as err:
        read_table(p, SCHEMA)
    msg = str(err.value)
    assert "column 'item' is not a valid int in 1 row(s): row 1: 'x'" in msg
    assert "column 'weight' is below the minimum 0 in 1 row(s): row 2" in msg
    assert "column 'when' is not a valid datetime in 1 row(s): row 3" in msg
    assert "column 'user' is empty/null in 1 row(s): row 4" in msg
    assert "column 'kind' is not one of ['buy', 'view']" in msg


def test_schema_missing_column_names_it(tmp_path: Path) -> None:
    p = tmp_path / "m.parquet"
    pd.DataFrame({"user": ["a"]}).to_parquet(p)
    with pytest.raises(DataError, match=r"missing required column\(s\) \['item'\]"):
        read_table(p, SCHEMA)


def test_unique_constraint() -> None:
    schema = Schema([Column("tx_id", "int")], unique=["tx_id"])
    with pytest.raises(DataError, match="duplicates an earlier row in 1 row"):
        schema.validate(pd.DataFrame({"tx_id": [1, 2, 2]}))


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "out.parquet"
    write_table(pd.DataFrame({"a": [1, 2]}), target)

    def crash_mid_write() -> None:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash mid-write"):
        crash_mid_write()
    assert pd.read_parquet(target)["a"].tolist() == [1, 2]
    assert [p.name for p in target.parent.iterdir()] == ["out.parquet"]


def test_fingerprint_changes_with_content() -> None:
    a = pd.DataFrame({"x": [1, 2, 3]})
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) != fingerprint(pd.DataFrame({"x": [1, 2, 4]}))


def test_schema_ids_unix_times_strict_bounds_and_one_line_errors() -> None:
    schema = Schema(
        [
            Column("id", "id", max_length=4),
            Column("amount", "float", gt=0),
            Column("at", "unixtime"),
        ],
        min_rows=1,
    )
    good = pd.DataFrame({"id": [12.0, 7.0], "amount": [0.5, 3], "at": ["2024-01-01", 1_700_000_000.5]})
    out = schema.validate(good)
    assert out["id"].tolist() == ["12", "7"]  # integral floats are ids "12", not "12.0"
    assert out["at"].tolist() == [1_704_067_200, 1_700_000_000] and out["at"].dtype == "int64"
    bad = pd.DataFrame({"id": [" ", "abcde"], "amount": [0, 1], "at": [1_700_000_000_000, "2024-01-01"]})
    with pytest.raises(DataError) as err:
        schema.validate(bad, source="t.csv")
    msg = str(err.value)
    assert "\n" not in msg
    assert "t.csv: column 'id' is empty/null in 1 row(s): row 0: ' '" in msg
    assert "column 'id' is longer than 4 characters in 1 row(s): row 1: 'abcde'" in msg
    assert "column 'amount' is not greater than 0 in 1 row(s): row 0: 0" in msg
    assert "column 'at' is not a valid unix time in seconds (0..253402300799) or a date in 1 row(s)" in msg
    with pytest.raises(DataError, match=r"t.csv: 0 row\(s\); at least 1 needed"):
        schema.validate(good.iloc[:0], source="t.csv")
    with pytest.raises(DataError, match=r"expected a header id,amount,at"):
        schema.validate(good[["id"]], source="t.csv")


def test_repeated_ids_share_one_str_each_and_keep_their_meaning() -> None:
    # 50M interactions hold a few million distinct ids: a str per row would cost ~60 bytes a row, not 8
    raw = pd.Series(["u1", " u2 ", "u1", None, "", "u2", 7, "7"] * 1000, dtype=object)
    out = Schema([Column("user", "id", nullable=True, max_length=3)]).validate(pd.DataFrame({"user": raw}))["user"]
    assert out[:8].tolist() == ["u1", "u2", "u1", None, None, "u2", "7", "7"]
    assert len({id(v) for v in out if v is not None}) <= 5  # one object per distinct input, however many rows
    floats = Schema([Column("user", "id")]).validate(pd.DataFrame({"user": [3.0, 12.0, 3.0]}))["user"]
    assert floats.tolist() == ["3", "12", "3"]
    with pytest.raises(DataError, match="longer than 3 characters in 1 row"):
        Schema([Column("user", "id", max_length=3)]).validate(pd.DataFrame({"user": ["abcd", "ab", "ab"]}))
