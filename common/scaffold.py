"""Create an app from a table, or the churn example: ``python -m common.scaffold bc --from bc.csv --target label``.

``make new-app NAME=bc FROM=bc.csv TARGET=label [ID=col] [TIME=col] [TASK=classification|regression] [OUT=dir]`` is
the same command. From the table the scaffold infers the schema (:class:`common.data.Schema`), the features (numeric
or categorical, listed in the app's ``config.py`` where you can edit them), the task (a target with few classes is
a classification) and embeds a sample (``apps/<name>/sample.csv``, at most :data:`SAMPLE_ROWS` rows) as the demo
data. Without ``--from`` the app is the churn example on a simulated table. The app implements
:class:`common.app.App` (``pipeline.py``): train, evaluate against baselines, serve, predict, batch, monitor and a
fair retrain work at once. ``--out DIR`` writes a standalone project (its own ``pyproject.toml``, ``conftest.py``,
``apps/<name>/``, ``tests/<name>/``) that depends on the installed mlref ``common``. Existing files are never
overwritten.
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.data import Column, DataError, Schema, read_table, write_table

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "app"  # outside the import package
REPO = TEMPLATE.parents[1]
TOKEN = "__APP__"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")
RESERVED = {"common", "tests", "bench", "apps", "test", "demo", "models", "scaffold"}
SAMPLE_ROWS = 2000  # rows of the user's table embedded as the app's demo data
MAX_CATEGORIES = 50  # a text column with more distinct values is left out of the features (an id, free text)
MAX_CLASSES = 10  # an integer target with at most this many values is a classification
MIN_ROWS = 30


@dataclass
class TableSpec:
    """What the scaffold read from a table: the columns' roles and the schema it writes into ``data.py``."""

    target: str
    task: str
    id: str | None = None
    time: str | None = None
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    columns: list[str] = field(default_factory=list)  # Column(...) source lines, schema order


def check_name(name: str, root: Path) -> None:
    """Raise ``ValueError`` unless ``name`` is a new, importable, lowercase app name."""
    if not NAME_RE.match(name) or keyword.iskeyword(name) or name in RESERVED or name in sys.stdlib_module_names:
        raise ValueError(
            f"app name {name!r}: use 2-31 lowercase letters, digits or '_', starting with a letter, "
            f"not a Python keyword, a standard-library module or one of {sorted(RESERVED)}"
        )
    for path in (root / "apps" / name, root / "tests" / name):
        if path.exists():
            raise ValueError(f"{path} exists already; choose another name or remove it")


# ------------------------------------------------------------------ reading the user's table


def _integral(s: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) and (s % 1 == 0).all())


def _target(y: pd.Series, target: str, task: str | None) -> tuple[str, Column]:
    """The task (inferred when None) and the target's schema column, from its labelled values ``y``."""
    if len(y) < MIN_ROWS:
        raise ValueError(f"--target {target!r}: {len(y)} labelled row(s); at least {MIN_ROWS} needed")
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    if task is None:
        task = "classification" if not numeric or (_integral(y) and y.nunique() <= MAX_CLASSES) else "regression"
    if task == "regression":
        if not numeric:
            raise ValueError(f"--target {target!r}: --task regression needs numbers, found e.g. {y.iloc[0]!r}")
        return task, Column(target, "float", required=False, nullable=True)
    if not 2 <= y.nunique() <= MAX_CATEGORIES:
        raise ValueError(f"--target {target!r}: {y.nunique()} classes; a classification needs 2..{MAX_CATEGORIES}")
    if _integral(y):
        return task, Column(target, "int", required=False, nullable=True, allowed={int(v) for v in y.unique()})
    if pd.api.types.is_bool_dtype(y):
        return task, Column(target, "bool", required=False, nullable=True)
    return task, Column(target, "str", required=False, nullable=True, allowed=set(map(str, y.unique())))


def _feature(s: pd.Series) -> Column | str:
    """A feature's schema column (dtype ``float``: numeric, ``str``: categorical), or why it is not a feature."""
    values = s.dropna()
    if values.nunique() < 2:
        return "constant"
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return Column(str(s.name), "float", nullable=bool(s.isna().any()))
    if values.nunique() <= MAX_CATEGORIES and values.nunique() < 0.5 * len(values):
        allowed = set(map(str, values.unique()))
        return Column(str(s.name), "str", nullable=bool(s.isna().any()), allowed=allowed)
    return f"text with {values.nunique()} distinct values (an identifier or free text)"


def infer_spec(
    df: pd.DataFrame, target: str, *, id: str | None = None, time: str | None = None, task: str | None = None
) -> TableSpec:
    """The roles of ``df``'s columns; ``ValueError`` naming the column when the table cannot make an app."""
    for role, col in (("--target", target), ("--id", id), ("--time", time)):
        if col is not None and col not in df.columns:
            raise ValueError(f"{role} {col!r}: no such column; the table has {list(df.columns)}")
    task, target_column = _target(df[target].dropna(), target, task)
    spec = TableSpec(target=target, task=task, id=id, time=time)
    cols: list[Column] = []
    if id is not None:
        if df[id].isna().any() or df[id].duplicated().any():
            raise ValueError(f"--id {id!r}: values must be present and unique")
        cols.append(Column(id, "id", max_length=128))
    if time is not None:
        cols.append(Column(time, "unixtime"))
        Schema([cols[-1]]).validate(df[[time]], source=f"--time {time!r}")  # raises DataError with the bad rows
    for name in df.columns:
        if name not in (target, id, time):
            feature = _feature(df[name])
            if isinstance(feature, str):
                spec.ignored[str(name)] = feature
                continue
            (spec.numeric if feature.dtype == "float" else spec.categorical).append(str(name))
            cols.append(feature)
    if not spec.numeric and not spec.categorical:
        raise ValueError(f"no feature columns besides the target: {spec.ignored or list(df.columns)}")
    spec.columns = [_column_source(c) for c in [*cols, target_column]]
    return spec


def _column_source(c: Column) -> str:
    """``Column('x', 'float', nullable=True)``: a column as the line ``data.py`` holds."""
    args = [_str(c.name), _str(c.dtype)]
    for key in ("required", "nullable", "max_length"):
        if getattr(c, key) != getattr(Column("x"), key):
            args.append(f"{key}={getattr(c, key)!r}")
    if c.allowed is not None:
        values = (_str(v) if isinstance(v, str) else repr(v) for v in sorted(c.allowed, key=str))
        args.append("allowed={" + ", ".join(values) + "}")
    return f"Column({', '.join(args)})"


def sample_of(df: pd.DataFrame, spec: TableSpec, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """At most ``rows`` rows of the schema's columns (random, seed 0), in the table's order (time order with a TIME
    column): the app's embedded demo data."""
    keep = [c for c in df.columns if c not in spec.ignored]
    out = df[keep].sample(n=min(rows, len(df)), random_state=0).sort_index()
    return out.sort_values(spec.time, kind="stable") if spec.time else out


def simulate_churn(n: int = SAMPLE_ROWS, *, days: int = 60, seed: int = 0) -> pd.DataFrame:
    """The churn example's table: ``id,timestamp,tenure_months,monthly_spend,support_calls,plan,label``, ``n`` rows
    over ``days`` days; ``P(label=1) = sigmoid(-1 - 0.04 tenure + 0.02 (spend - 60) + 0.6 calls + 0.5 [basic])``."""
    rng = np.random.default_rng(seed)
    tenure, spend = rng.gamma(2.0, 12.0, n).round(1), rng.normal(60.0, 20.0, n).clip(0).round(2)
    calls, plan = rng.poisson(1.0, n).astype(float), rng.choice(["basic", "plus", "pro"], size=n, p=[0.5, 0.3, 0.2])
    logit = -1 - 0.04 * tenure + 0.02 * (spend - 60) + 0.6 * calls + 0.5 * (plan == "basic")
    return pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(n)],
            "timestamp": np.sort(1_704_067_200 + rng.integers(0, days * 86_400, n)),
            "tenure_months": tenure,
            "monthly_spend": spend,
            "support_calls": calls,
            "plan": plan,
            "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )


# ------------------------------------------------------------------ writing the app


def _tuple_source(items: list[str], indent: int = 4) -> str:
    if len(items) < 2:
        return f"({_str(items[0])},)" if items else "()"
    pad = " " * (indent + 4)
    return "(\n" + "".join(f"{pad}{_str(item)},\n" for item in items) + " " * indent + ")"


def _str(text: object) -> str:
    """A Python string literal in double quotes (what ruff format writes)."""
    return json.dumps(str(text), ensure_ascii=False)


def tokens(name: str, spec: TableSpec, source: str) -> dict[str, str]:
    """Placeholder -> text for the templates."""
    return {
        TOKEN: name,
        "__CLASS__": name.title().replace("_", ""),
        "__SOURCE__": source,
        "__TARGET__": _str(spec.target),
        "__TASK__": _str(spec.task),
        "__TARGET_TEXT__": spec.target,
        "__TASK_TEXT__": spec.task,
        "__ID__": _str(spec.id) if spec.id else "None",
        "__TIME__": _str(spec.time) if spec.time else "None",
        "__NUMERIC__": _tuple_source(spec.numeric),
        "__CATEGORICAL__": _tuple_source(spec.categorical),
        "__IGNORED__": "".join(f"# - {_str(col)}: {why}\n" for col, why in spec.ignored.items()) or "# (none)\n",
        "__COLUMNS__": "".join(f"        {line},\n" for line in spec.columns),
        "__FEATURES__": ", ".join(f"`{c}`" for c in spec.numeric + spec.categorical),
        "__REPO__": str(REPO),
    }


def render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def scaffold(
    name: str,
    root: Path = Path("."),
    *,
    table: Path | None = None,
    target: str | None = None,
    id: str | None = None,
    time: str | None = None,
    task: str | None = None,
    standalone: bool = False,
) -> list[Path]:
    """Write the app ``name`` (and its tests) under ``root``, made from ``table`` (or the churn example); with
    ``standalone`` also the project files of a repository of its own. Returns the files written."""
    root = Path(root)
    check_name(name, root)
    templates = sorted(TEMPLATE.rglob("*.tmpl"))
    if not templates:
        raise FileNotFoundError(f"no templates in {TEMPLATE}: run the scaffold from an mlref checkout")
    if table is None:
        if target or id or time or task:
            raise ValueError("--target/--id/--time/--task describe the table of --from; give --from FILE too")
        df, source = simulate_churn(), "the simulated churn table"
        spec = infer_spec(df, "label", id="id", time="timestamp", task="classification")
    else:
        if not target:
            raise ValueError("--from needs --target COLUMN (the column to predict)")
        if task not in (None, "classification", "regression"):
            raise ValueError(f"--task {task!r}: use classification or regression")
        try:
            df = read_table(table)
        except DataError as exc:
            raise ValueError(str(exc)) from None
        source = re.sub(r"[^\w .,()+-]", "_", Path(table).name)  # safe inside a docstring
        spec = infer_spec(df, target, id=id, time=time, task=task)
    values = tokens(name, spec, source)
    plan: list[tuple[Path | None, Path]] = []
    for src in templates:
        part, filename = src.relative_to(TEMPLATE).parts[0], src.name.removesuffix(".tmpl")
        if part == "app":
            plan.append((src, root / "apps" / name / filename))
        elif part == "tests":
            plan.append((src, root / "tests" / name / (f"test_{name}.py" if filename == "test_app.py" else filename)))
        elif standalone:
            plan.append((src, root / filename))
    plan += [(None, root / "apps" / name / "__init__.py"), (None, root / "tests" / name / "__init__.py")]
    if standalone:
        plan += [(None, p) for p in (root / "apps" / "__init__.py", root / "tests" / "__init__.py") if not p.exists()]
    for _, dest in plan:
        if dest.exists():
            raise ValueError(f"{dest} exists already; choose another name or directory")
    written = []
    for template, dest in plan:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "x") as fh:  # "x": never overwrite
            fh.write(render(template.read_text(), values) if template is not None else "")
        written.append(dest)
    written.append(write_table(sample_of(df, spec), root / "apps" / name / "sample.csv"))
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("name", help="the new app's name, e.g. bc")
    parser.add_argument("--from", dest="table", type=Path, help="your table (CSV/parquet); default: the churn example")
    parser.add_argument("--target", help="the column to predict (with --from)")
    parser.add_argument("--id", help="a column of unique row ids (optional)")
    parser.add_argument("--time", help="a column of event times: retrain compares on the newest window (optional)")
    parser.add_argument("--task", choices=("classification", "regression"), help="default: inferred from the target")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--root", type=Path, default=Path("."), help="the mlref checkout to write into (default: .)")
    where.add_argument("--out", type=Path, help="write a standalone project into this directory instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = args.out if args.out is not None else args.root
    try:
        files = scaffold(
            args.name,
            root,
            table=args.table,
            target=args.target,
            id=args.id,
            time=args.time,
            task=args.task,
            standalone=args.out is not None,
        )
    except (ValueError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = f"in {root} " if args.out is not None else ""
    print(f"created apps/{args.name}/ and tests/{args.name}/ {where}({len(files)} files). Next:")
    if args.out is not None:
        print(f"  cd {root}")
    print(f"  python -m apps.{args.name} demo          # the whole lifecycle on the embedded sample, offline")
    print(f"  python -m pytest tests/{args.name}        # its tests")
    print(f"  then read apps/{args.name}/README.md; edit the features in apps/{args.name}/config.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
