"""Before/after of the scaling fixes: the same stages on the same fleet with the code of two checkouts.

``python -m apps.maintenance.scale_fixes --before /tmp/before --units 10000 [--data-dir D]`` where ``/tmp/before``
is a checkout of the commit before the fixes (``git worktree add /tmp/before <commit>``). Each stage runs in its
own interpreter (:func:`common.scaling.run_measured`: wall seconds, peak RSS) importing one checkout's code:

- ``features``: ``train.prepare`` + ``Prepared.health`` (split, preprocessing, health features of every cycle);
  before, ``prepare`` also built the DCNN's windows of every training cycle;
- ``scoring``: ``lifecycle.predict_table`` over the running fleet with a fixed model (trained once here, 50
  trees: the stage measured is the chunking around the model); before, each chunk filtered the whole table.

The outputs are compared (health features, predictions): identical is the point. Writes
``bench/results/maintenance-scale-fixes.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import scaling

log = logging.getLogger(__name__)

CHILD = """
import hashlib, json, os, sys, time
sys.path.insert(0, os.environ["MLREF_CODE_ROOT"])  # before the working directory python -c puts first
import numpy as np, pandas as pd
from apps.maintenance.config import Config
from apps.maintenance.data import validate_fleet
stage, data, model_dir = sys.argv[1], sys.argv[2], sys.argv[3]
table = validate_fleet(pd.read_parquet(data))
t0 = time.perf_counter()
if stage == "features":
    from apps.maintenance.train import prepare
    cfg = Config()
    p = prepare(table, cfg)
    h = p.health(cfg)
    digest = hashlib.sha256(h[0].tobytes() + h[2].tobytes()).hexdigest()
else:
    from apps.maintenance.lifecycle import predict_table
    from apps.maintenance.model import RULModel
    out = predict_table(RULModel.load(model_dir), table)
    digest = hashlib.sha256(pd.util.hash_pandas_object(out, index=False).to_numpy().tobytes()).hexdigest()
# VmHWM, not ru_maxrss (kept across exec: the parent's peak); read directly, the "before" checkout may predate
# common.scaling.peak_rss_self_bytes
with open("/proc/self/status") as fh:
    peak = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM:"))
print(json.dumps({"stage": stage, "seconds": time.perf_counter() - t0, "sha256": digest,
                  "peak_rss_self_bytes": peak}))
"""


def main(argv: list[str] | None = None) -> int:
    """Run both stages with both checkouts; exit 0 (the comparison is in the JSON and the log)."""
    p = argparse.ArgumentParser(prog="python -m apps.maintenance.scale_fixes", description=__doc__.split("\n\n")[0])
    p.add_argument("--before", type=Path, required=True, help="a checkout of the code before the fixes")
    p.add_argument("--units", type=int, default=10_000)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--output", type=Path, default=Path("bench/results/maintenance-scale-fixes.json"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    import pandas as pd

    from apps.maintenance.config import Config
    from apps.maintenance.data import validate_fleet
    from apps.maintenance.scale import data_paths, step_generate
    from apps.maintenance.train import train
    from common.reports.files import write_json
    from common.workspace import Workspace

    data_dir = a.data_dir or Workspace.from_env().data_dir / "maintenance-scale"
    step_generate(a.units, data_dir, 0)
    paths = data_paths(a.units, data_dir)
    model_dir = paths["dir"] / "model-50-trees"
    if not (model_dir / "model.json").exists():
        small = validate_fleet(pd.read_parquet(data_paths(a.units, data_dir)["test"]))  # any fleet: fixed model
        train(small, Config(boost_trees=50, calibration_folds=0)).save(model_dir)
    load_start, t0 = os.getloadavg(), time.perf_counter()
    rows = []
    roots = {"before": a.before.resolve(), "after": Path(__file__).resolve().parents[2]}
    for stage, data in (("features", paths["histories"]), ("scoring", paths["running"])):
        for label, root in roots.items():
            env = {**os.environ, "MLREF_CODE_ROOT": str(root), "OMP_WAIT_POLICY": "PASSIVE"}
            cmd = [sys.executable, "-c", CHILD, stage, str(data), str(model_dir)]
            log.info("%s with the %s code ...", stage, label)
            r = scaling.run_measured(cmd, timeout_s=3600, env=env) | {"code": label, "units": a.units}
            log.info("%s %s: %s", stage, label, {k: r.get(k) for k in ("seconds", "peak_rss_bytes", "failed")})
            rows.append(r)
    same = {
        s: len({r.get("sha256") for r in rows if r.get("stage") == s}) == 1 and all("sha256" in r for r in rows)
        for s in ("features", "scoring")
    }
    doc: dict[str, Any] = {
        "what": "the scaling fixes, before and after, on the same simulated fleet: wall seconds and peak RSS of "
        "each stage in its own interpreter; identical = the outputs' sha256 agree",
        "units": a.units,
        "results": rows,
        "identical": same,
        "conditions": scaling.conditions(t0, load_start),
    }
    write_json(a.output, doc)
    print(json.dumps({"output": str(a.output), "identical": same}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
