"""`make new-app NAME=x [FROM=table TARGET=col ...]` / `python -m common.scaffold x`: an app made from a user's table
(or the churn example) whose commands, demo and tests work at once, in this repo or as a standalone project."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from common import scaffold as module
from common.scaffold import check_name, infer_spec, main, scaffold, simulate_churn

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = 'lint.isort.known-first-party=["apps", "common"]'  # in a standalone project common is installed


@pytest.fixture(scope="module")
def bc_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's breast-cancer table (bundled with scikit-learn: offline) with its target as `label`."""
    from sklearn.datasets import load_breast_cancer

    path = tmp_path_factory.mktemp("table") / "bc.csv"
    load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("name", ["Churn", "x", "1abc", "class", "json", "common", "my-app", "a" * 40])
def test_bad_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="app name"):
        check_name(name, tmp_path)


def test_the_templates_live_outside_the_import_package_and_are_found() -> None:
    assert module.TEMPLATE == REPO / "templates" / "app"
    assert (module.TEMPLATE / "app" / "pipeline.py.tmpl").is_file()
    assert not (REPO / "common" / "scaffold_template").exists()


def test_missing_templates_are_an_error_not_an_empty_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "TEMPLATE", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no templates"):
        scaffold("churn", tmp_path)
    assert not (tmp_path / "apps").exists()


def test_an_existing_app_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "apps" / "churn").mkdir(parents=True)
    (tmp_path / "apps" / "churn" / "model.py").write_text("# mine\n")
    with pytest.raises(ValueError, match="exists already"):
        scaffold("churn", tmp_path)
    assert (tmp_path / "apps" / "churn" / "model.py").read_text() == "# mine\n"


def test_the_table_gives_schema_features_and_task(bc_csv: Path) -> None:
    spec = infer_spec(pd.read_csv(bc_csv), "label")
    assert spec.task == "classification" and len(spec.numeric) == 30 and not spec.categorical
    assert spec.columns[-1] == 'Column("label", "int", required=False, nullable=True, allowed={0, 1})'
    churn = infer_spec(simulate_churn(), "label", id="id", time="timestamp")
    assert churn.numeric == ["tenure_months", "monthly_spend", "support_calls"] and churn.categorical == ["plan"]
    assert 'Column("plan", "str", allowed={"basic", "plus", "pro"})' in churn.columns
    df = pd.read_csv(bc_csv).assign(note=[f"free text {i}" for i in range(569)], const=1.0)
    spec = infer_spec(df, "mean area")  # a continuous target: a regression
    assert spec.task == "regression" and set(spec.ignored) == {"note", "const"} and "label" in spec.numeric


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "nope"], "--target 'nope': no such column"),
        (["--target", "label", "--time", "when"], "--time 'when': column 'when' is not a valid unix time"),
        (["--target", "label", "--id", "label"], "--id 'label': values must be present and unique"),
        (["--target", "label", "--task", "regression", "--id", "nope"], "--id 'nope'"),
        ([], "--from needs --target"),
    ],
)
def test_a_table_that_cannot_make_an_app_is_a_user_error(
    args: list[str], message: str, bc_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = pd.read_csv(bc_csv).assign(when=["2024-01-02"] * 568 + ["next tuesday"])
    table.to_csv(tmp_path / "bc.csv", index=False)
    assert main(["bc", "--from", str(tmp_path / "bc.csv"), *args, "--out", str(tmp_path / "p")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "p" / "apps").exists()


def test_the_sample_is_capped_and_the_standalone_project_is_complete(bc_csv: Path, tmp_path: Path) -> None:
    big = pd.concat([pd.read_csv(bc_csv)] * 5, ignore_index=True)
    big.to_csv(tmp_path / "big.csv", index=False)
    files = scaffold("bc", tmp_path / "p", table=tmp_path / "big.csv", target="label", standalone=True)
    names = {p.relative_to(tmp_path / "p").as_posix() for p in files}
    assert {
        "pyproject.toml",
        "conftest.py",
        "apps/bc/pipeline.py",
        "apps/bc/sample.csv",
        "tests/bc/test_bc.py",
    } <= names
    assert len(pd.read_csv(tmp_path / "p" / "apps" / "bc" / "sample.csv")) == module.SAMPLE_ROWS
    config = (tmp_path / "p" / "apps" / "bc" / "config.py").read_text()
    assert '"worst fractal dimension",' in config and "categorical: tuple[str, ...] = ()" in config
    assert "__" + "APP__" not in "".join(p.read_text() for p in files if p.suffix == ".py")


def _run(args: list[str], cwd: Path, home: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLREF_HOME": str(home), "MLREF_SEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("MLREF_TRACKING_URI", None)
    env.pop("MLREF_API_KEY", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _json(r: subprocess.CompletedProcess[str]) -> dict:
    assert r.returncode in (0, 1), r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(r.stdout)


def _serve_one(project: Path, home: Path, row: dict, port: int) -> dict:
    """``python -m apps.bc serve`` as a process: the champion answers one row over HTTP; the server is stopped."""
    import httpx

    env = {**os.environ, "MLREF_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "apps.bc", "serve", "--port", str(port)], cwd=project, env=env)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            assert server.poll() is None, "the server exited"
            time.sleep(0.5)
        r = httpx.post(f"{url}/v1/predict", json={"rows": [row]}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.e2e
def test_breast_cancer_table_to_a_standalone_app_with_no_edits(bc_csv: Path, tmp_path: Path, free_port: int) -> None:
    """`scaffold bc --from bc.csv --target label --out DIR`: every command works there, retrain on the training file
    compares only on rows neither model saw (or refuses), and the project's own pytest passes."""
    project, home = tmp_path / "bcproj", tmp_path / "home"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "common.scaffold",
            "bc",
            "--from",
            str(bc_csv),
            "--target",
            "label",
            "--out",
            str(project),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    py = [sys.executable, "-m", "apps.bc"]
    demo = _json(_run([*py, "demo", "--max-iter", "50"], project, home))
    assert demo["serve"]["good"] == 200 and demo["serve"]["bad"] == 422 and demo["monitor"]["alerts"]
    assert demo["retrain"]["compared_rows"] > 0 and "neither model" in demo["retrain"]["compared_on"]

    trained = _json(_run([*py, "train", "--max-iter", "50"], project, home))
    assert trained["version"] == "1" and trained["test"]["roc_auc"] > 0.9
    assert trained["baselines"]["majority"]["roc_auc"] == pytest.approx(0.5) and "linear" in trained["baselines"]
    evaluated = _json(_run([*py, "evaluate", "--dataset", str(bc_csv), "--max-iter", "50"], project, home))
    assert set(evaluated["metrics"]) == {"model", "linear", "majority"}
    assert evaluated["metrics"]["majority"]["roc_auc"] == pytest.approx(0.5)
    row = pd.read_csv(bc_csv).drop(columns=["label"]).iloc[0].to_dict()
    predicted = _json(_run([*py, "predict", json.dumps(row)], project, home))
    assert predicted["prediction"] in (0, 1) and 0 <= predicted["score"] <= 1
    served = _serve_one(project, home, row, free_port)
    assert served["model_version"] == "1" and served["predictions"] == [predicted["prediction"]]
    pd.read_csv(bc_csv).drop(columns=["label"]).to_csv(tmp_path / "recent.csv", index=False)
    scored = _json(
        _run([*py, "batch", "-i", str(tmp_path / "recent.csv"), "-o", str(tmp_path / "s.csv")], project, home)
    )
    assert scored["rows"] == 569 and len(pd.read_csv(tmp_path / "s.csv")) == 569
    monitored = _run([*py, "monitor", "--dataset", str(tmp_path / "recent.csv")], project, home)
    assert Path(_json(monitored)["report"]).is_file()

    # train on bc.csv, retrain on the same file: rows the champion trained on are never compared on
    _json(_run([*py, "train", "--dataset", str(bc_csv), "--max-iter", "50", "--promote"], project, home))
    retrained = _run([*py, "retrain", "--dataset", str(bc_csv), "--max-iter", "50"], project, home)
    out = _json(retrained)
    assert out["reason"].startswith("no fair comparison") or (
        out["compared_rows"] > 0 and out["compared_on"] == "hold-out rows neither model trained on"
    )
    assert "cannot check that neither model saw" not in retrained.stderr

    tests = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, home, timeout=900)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "6 passed" in tests.stdout


@pytest.mark.e2e
def test_churn_example_has_a_time_column_passes_lint_and_its_own_tests(tmp_path: Path) -> None:
    """Without --from: the churn example (id and time columns, a categorical feature); retrain compares on the newest
    window, refused when the champion has seen it. The generated code passes the repo's ruff rules."""
    project = tmp_path / "churnproj"
    assert main(["churn", "--out", str(project)]) == 0
    data = (project / "apps" / "churn" / "data.py").read_text()
    assert 'TIME = "timestamp"' in data and 'ID = "id"' in data
    ruff = Path(sys.executable).parent / "ruff"
    if ruff.exists():
        for args in (["check"], ["format", "--check"]):
            lint = _run(
                [str(ruff), *args, "--config", str(REPO / "pyproject.toml"), "--config", FIRST_PARTY, "apps", "tests"],
                project,
                tmp_path,
            )
            assert lint.returncode == 0, lint.stdout + lint.stderr
    tests = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, tmp_path / "home", 900)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "6 passed" in tests.stdout
    again = subprocess.run(
        [sys.executable, "-m", "common.scaffold", "churn", "--out", str(project)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "exists already" in again.stderr


def _wine(path: Path) -> Path:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    frame.assign(region=(["north", "south", "east"] * 60)[: len(frame)]).to_csv(path, index=False)
    return path


def _diabetes(path: Path) -> Path:
    from sklearn.datasets import load_diabetes

    load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)
    return path


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("name", "table", "target", "task"),
    [("wine", _wine, "cultivar", "classification"), ("diab", _diabetes, "target", "regression")],
)
def test_three_classes_with_a_category_and_a_regression_pass_their_own_tests(
    name: str, table, target: str, task: str, tmp_path: Path
) -> None:
    project = tmp_path / "proj"
    assert main([name, "--from", str(table(tmp_path / "t.csv")), "--target", target, "--out", str(project)]) == 0
    assert f'TASK = "{task}"' in (project / "apps" / name / "data.py").read_text()
    tests = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, tmp_path / "home", 900)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "6 passed" in tests.stdout
