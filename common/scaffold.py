"""Create a new app from mlref's template: ``python -m common.scaffold churn`` (or ``make new-app NAME=churn``).

Writes ``apps/<name>/`` (config, data, model, train, evaluate, lifecycle, service, demo, ``__main__`` with every
standard command of ``common/cli.py``, README) and ``tests/<name>/`` (unit tests and an end-to-end demo test).
The generated app works at once on a simulated tabular binary-classification problem; its README says which
files to change first. Existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "app"  # outside the import package
TOKEN = "__APP__"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")
RESERVED = {"common", "tests", "bench", "apps", "test", "demo", "models", "scaffold"}


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


def render(text: str, name: str) -> str:
    return text.replace(TOKEN, name)


def scaffold(name: str, root: Path = Path(".")) -> list[Path]:
    """Write the app ``name`` under ``root``; returns the files written."""
    root = Path(root)
    check_name(name, root)
    templates = sorted(TEMPLATE.rglob("*.tmpl"))
    if not templates:
        raise FileNotFoundError(f"no templates in {TEMPLATE}: run the scaffold from an mlref checkout")
    plan: list[tuple[Path, Path]] = []
    for src in templates:
        rel = src.relative_to(TEMPLATE)
        part, filename = rel.parts[0], rel.name.removesuffix(".tmpl")
        if part == "app":
            dest = root / "apps" / name / filename
        else:
            dest = root / "tests" / name / (f"test_{name}.py" if filename == "test_app.py" else filename)
        plan.append((src, dest))
    plan += [(Path(), root / "apps" / name / "__init__.py"), (Path(), root / "tests" / name / "__init__.py")]
    written = []
    for src, dest in plan:
        dest.parent.mkdir(parents=True, exist_ok=True)
        text = render(src.read_text(), name) if src.name else ""
        with open(dest, "x") as fh:  # "x": never overwrite
            fh.write(text)
        written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the new app's name, e.g. churn")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: .)")
    args = parser.parse_args(argv)
    try:
        files = scaffold(args.name, args.root)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created apps/{args.name}/ and tests/{args.name}/ ({len(files)} files). Next:")
    print(f"  python -m apps.{args.name} demo          # the whole lifecycle, offline")
    print(f"  python -m pytest tests/{args.name}        # its tests")
    print(f"  then read apps/{args.name}/README.md: change data.py's schema and simulator first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
