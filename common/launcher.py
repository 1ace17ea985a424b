"""The ``mlref`` console script: ``mlref <app> <command> [options]`` is ``python -m apps.<app> <command> [options]``.

Installed by ``pip install -e .`` (the Makefile's ``setup-main`` does it). ``mlref`` alone lists the apps found
in the ``apps`` package; an unknown app is a user error (exit 2) naming the ones there are.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Sequence

USAGE = "usage: mlref <app> <command> [options]   (the same as: python -m apps.<app> <command> [options])"


def available_apps() -> list[str]:
    """Names of the packages under ``apps`` that have a ``__main__`` module, sorted."""
    import apps

    return sorted(
        m.name
        for m in pkgutil.iter_modules(apps.__path__)
        if m.ispkg and importlib.util.find_spec(f"apps.{m.name}.__main__") is not None
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch to ``apps.<app>.__main__.main`` with the remaining arguments (exit codes as the app's own)."""
    args = list(sys.argv[1:] if argv is None else argv)
    names = available_apps()
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        print("apps: " + ", ".join(names))
        sys.exit(0 if args else 2)
    name = args[0].replace("-", "_")
    if name not in names:
        print(f"error: unknown app {args[0]!r}; the apps are: {', '.join(names)}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"apps.{name}.__main__")
    sys.argv = [f"mlref {name}", *args[1:]]
    module.main()


if __name__ == "__main__":  # pragma: no cover
    main()
