"""The scaling benches' kit: a child's memory is measured, a refusal is recorded, a hung child is killed."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from common.scaling import REFUSED_EXIT, exponents, loglog_exponent, parse_sizes, plot_curves, run_measured


def _child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_child_peak_memory_is_measured_from_its_process_tree(tmp_path):
    # the child holds 300 MB for a second: the sampled peak must see it (and the child's own ru_maxrss agrees)
    cmd = _child(
        tmp_path,
        """
        import json, sys, time
        from common.scaling import peak_rss_self_bytes
        block = bytearray(300 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        time.sleep(1.0)
        print("a log line on stdout that is not the result")
        print(json.dumps({"rows": 3, "peak_rss_self_bytes": peak_rss_self_bytes()}))
        """,
    )
    r = run_measured(cmd, timeout_s=60)
    assert r["rows"] == 3
    assert r["peak_rss_bytes"] >= 300 * 2**20
    assert r["wall_s"] >= 1.0


def test_refusal_is_a_result_and_a_crash_is_named(tmp_path):
    refused = _child(
        tmp_path,
        f"""
        import json, sys
        print(json.dumps({{"refused": "needs 40.0 GiB, 24.0 GiB available: use --engine dask"}}))
        sys.exit({REFUSED_EXIT})
        """,
    )
    assert run_measured(refused, timeout_s=60)["refused"].startswith("needs 40.0 GiB")
    crash = _child(tmp_path, "import sys\nprint('boom: out of disk', file=sys.stderr)\nsys.exit(3)\n")
    r = run_measured(crash, timeout_s=60)
    assert r["failed"].startswith("exit 3") and "boom: out of disk" in r["failed"]


def test_a_hung_child_is_killed_at_its_timeout(tmp_path):
    hung = _child(tmp_path, "import time\ntime.sleep(600)\n")
    r = run_measured(hung, timeout_s=1.0)
    assert r["timed_out"] is True and r["wall_s"] < 30


def test_chatty_child_does_not_block_on_its_log(tmp_path):
    # 2 MB of stderr is more than a pipe holds: the child must still finish and report
    chatty = _child(
        tmp_path,
        """
        import json, sys
        for i in range(20000):
            print("x" * 100, file=sys.stderr)
        print(json.dumps({"ok": 1}))
        """,
    )
    assert run_measured(chatty, timeout_s=60)["ok"] == 1


def test_exponents_fit_power_laws_and_list_what_did_not_run():
    assert loglog_exponent([1e5, 1e6, 1e7], [2.0, 200.0, 20000.0]) == pytest.approx(2.0)
    assert loglog_exponent([1e5], [1.0]) is None
    assert loglog_exponent([1e5, 1e5], [1.0, 2.0]) is None  # one size: no slope
    rows = [
        {"step": "fit", "size": 100, "s": 1.0},
        {"step": "fit", "size": 10_000, "s": 10.0},
        {"step": "fit", "size": 1_000_000, "refused": "needs 99 GiB"},
        {"step": "score", "size": 100, "s": 0.5},
        {"step": "score", "size": 10_000, "timed_out": True},
    ]
    got = exponents(rows, series="step", x="size", metrics=("s",))
    assert got["fit"]["s_exponent"] == pytest.approx(0.5)
    assert got["fit"]["sizes_run"] == [100, 10_000]
    assert got["fit"]["not_run"] == [{"size": 1_000_000, "why": "needs 99 GiB"}]
    assert got["score"]["s_exponent"] is None and got["score"]["not_run"][0]["why"] == "timed out"


def test_plot_writes_a_png(tmp_path):
    rows = [{"step": "fit", "size": n, "s": n / 100, "rss": n * 1e3} for n in (100, 1000, 10_000)]
    rows.append({"step": "fit", "size": 100_000, "refused": "too big"})
    out = plot_curves(
        rows,
        tmp_path / "c.png",
        series="step",
        x="size",
        x_label="units",
        panels=[("s", "s", 1), ("rss", "B", 1)],
        title="t",
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text", ["lots", "", "10,5e9x", "1,1e4"])
def test_bad_sizes_name_the_flag(text):
    with pytest.raises(ValueError, match="--sizes"):
        parse_sizes(text, minimum=100, what="units")


def test_sizes_sorted_and_deduplicated():
    assert parse_sizes("1e4,100,1e4", minimum=100, what="units") == [100, 10_000]


def test_memory_guard_names_need_and_room_and_the_way_out(monkeypatch):
    from common.scaling import MemoryRefused, available_memory, check_memory

    check_memory(10, what="x", instead="y", available=100)  # fits: no error
    with pytest.raises(
        MemoryRefused, match=r"^features needs about 2.0 GiB of memory and 1.0 GiB is available: use dask"
    ):
        check_memory(2 * 2**30, what="features", instead="use dask", available=2**30)
    monkeypatch.setenv("MLREF_MEMORY_BYTES", "5e8")
    assert available_memory() == 500_000_000


def test_a_childs_peak_is_its_own_not_its_parents(tmp_path):
    # the parent holds 400 MB when it starts the child: ru_maxrss would report the parent's peak in the child
    import numpy as np

    held = np.ones(400 * 2**20, dtype=np.uint8)
    cmd = _child(
        tmp_path,
        """
        import json
        from common.scaling import peak_rss_self_bytes
        print(json.dumps({"peak_rss_self_bytes": peak_rss_self_bytes()}))
        """,
    )
    r = run_measured(cmd, timeout_s=60)
    assert held.sum() > 0 and r["peak_rss_self_bytes"] < 300 * 2**20
