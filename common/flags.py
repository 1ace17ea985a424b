"""Config dataclass fields as command-line flags, like Hugging Face's ``HfArgumentParser``: the machinery behind
``App.flags`` in :mod:`common.app`.

A flag is named after its field (``n_seeds`` -> ``--n-seeds``, ``xgb.max_depth`` -> ``--max-depth``, ``lambda_`` ->
``--lambda``), parses the field's scalar type, and says in its help the comment written beside the field in the
dataclass and its default. A flag left out (None) keeps the value of ``--config`` or the default.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any

import typer

from common.errors import ConfigError


def has_field(cls: type, dotted: str) -> bool:
    try:
        field_type(cls, dotted)
    except (KeyError, TypeError):
        return False
    return True


def field_type(cls: type, dotted: str) -> Any:
    """The annotated type of ``a.b.c`` in the dataclass ``cls`` (nested dataclasses followed)."""
    typ: Any = cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(typ):
            raise TypeError(f"{dotted}: {typ} is not a dataclass")
        hints = typing.get_type_hints(typ)
        if part not in hints:
            raise KeyError(f"{cls.__name__} has no field {dotted!r}")
        typ = hints[part]
    return typ


def set_field(cfg: Any, dotted: str, value: Any) -> None:
    """``cfg.a.b = value`` for ``dotted="a.b"``; an unknown name is a :class:`ConfigError`."""
    *parents, last = dotted.split(".")
    target = cfg
    for part in parents:
        target = getattr(target, part)
    if not dataclasses.is_dataclass(target) or last not in {f.name for f in dataclasses.fields(target)}:
        raise ConfigError(f"config has no field {dotted!r}")
    setattr(target, last, value)


_SCALARS = (bool, int, float, str)


def _scalar(typ: Any) -> type:
    """``int``, ``float | None``, ``tuple[int, ...]`` (written ``8,16``) ... -> the type a flag parses (``str`` for
    a tuple, split by :func:`parse_flag`); anything else is not flaggable."""
    if _tuple_item(typ) is not None:
        return str
    if typ in _SCALARS:
        return typ
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if (typing.get_origin(typ) in (typing.Union, types.UnionType)) and len(args) == 1 and args[0] in _SCALARS:
        return args[0]
    raise TypeError(f"a flag needs a bool/int/float/str field, not {typ}")


def _tuple_item(typ: Any) -> type | None:
    """``tuple[int, ...]`` -> ``int``; anything else -> None."""
    args = typing.get_args(typ)
    if typing.get_origin(typ) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
        return args[0]
    return None


def parse_flag(cls: type, dotted: str, value: Any) -> Any:
    """A flag's value as the field's type: ``"8,16,32"`` -> ``(8, 16, 32)`` for a ``tuple[int, ...]`` field."""
    item = _tuple_item(field_type(cls, dotted))
    if item is None or not isinstance(value, str):
        return value
    try:
        return tuple(item(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{dotted}: expected comma-separated {item.__name__} values, got {value!r}") from None


def split_alias(spec: str) -> tuple[str, str | None]:
    """``"fine_tune_epochs:epochs"`` -> (field, flag name); ``"epochs"`` -> ("epochs", None)."""
    field_name, _, flag = spec.partition(":")
    return field_name, flag or None


def field_help(cls: type, dotted: str) -> str:
    """The comment beside a config field in its source (``epochs: int = 250  # training epochs``), or ''."""
    typ: Any = cls
    *parents, last = dotted.split(".")
    for part in parents:
        typ = typing.get_type_hints(typ)[part]
    try:
        source = inspect.getsource(typ)
    except (OSError, TypeError):
        return ""
    match = re.search(rf"^\s+{re.escape(last)}\s*:[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE)
    return match.group(1).strip() if match else ""


def flag_parameter(cls: type, spec: str) -> inspect.Parameter:
    """The option of a config field; ``spec`` is the dotted field name, or ``field:flag`` to name the flag
    differently (``fine_tune_epochs:epochs`` -> ``--epochs``)."""
    dotted, alias = split_alias(spec)
    scalar = _scalar(field_type(cls, dotted))
    name = (alias or dotted.split(".")[-1]).rstrip("_").replace("_", "-")  # lambda_ -> --lambda
    decls = [f"--{name}/--no-{name}"] if scalar is bool else [f"--{name}"]
    default = _default(cls, dotted)
    text = field_help(cls, dotted) or f"config field {dotted}"
    if _tuple_item(field_type(cls, dotted)) is not None:
        text += ", comma-separated"
    opt = typer.Option(None, *decls, help=f"{text} (config {dotted}; default {default!r})")
    return inspect.Parameter(_flag_key(dotted), inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=scalar | None)


def _default(cls: type, dotted: str) -> Any:
    obj: Any = cls()
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _flag_key(dotted: str) -> str:
    return "cfg__" + dotted.replace(".", "__")


@dataclasses.dataclass(frozen=True)
class Option:
    """An option of a standard command that only this app has (not a config field): ``App.options["batch"] =
    (Option("k", int, 10, "items per user", min=1),)`` gives ``batch --k``, whose value reaches ``App.batch`` as the
    keyword argument ``k``."""

    name: str  # the keyword argument; the flag is --name with dashes (bool: --name/--no-name)
    type: Any
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    flag: str | None = None  # another flag name, e.g. "--log-level"
    short: str | None = None  # a short flag too, e.g. "-d"

    def parameter(self) -> inspect.Parameter:
        flag = self.flag or "--" + self.name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if self.type is bool else [flag, *filter(None, [self.short])]
        opt = typer.Option(self.default, *decls, help=self.help, min=self.min, max=self.max)
        return inspect.Parameter("opt__" + self.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=self.type)


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(standard arguments, {dotted config field: value} with flags left out (None) dropped, app options)."""
    std = {k: v for k, v in kwargs.items() if not k.startswith(("cfg__", "opt__"))}
    flags = {k[5:].replace("__", "."): v for k, v in kwargs.items() if k.startswith("cfg__") and v is not None}
    options = {k[5:]: v for k, v in kwargs.items() if k.startswith("opt__")}
    return std, flags, options


def keyword_param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def add_command(
    typer_app: typer.Typer, name: str, body: Callable[..., None], params: list[inspect.Parameter], doc: str
) -> None:
    """Register ``body(**standard[, flags={dotted field: value}][, options={name: value}])`` as command ``name``
    with signature ``params``."""

    takes = set(inspect.signature(body).parameters)

    def command(**kwargs: Any) -> None:
        std, flags, options = _split(kwargs)
        extra = ({"flags": flags} if "flags" in takes else {}) | ({"options": options} if "options" in takes else {})
        body(**std, **extra)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__doc__ = doc
    command.__name__ = name
    typer_app.command(name=name)(command)


def loggable_params(cfg: Any) -> dict[str, Any]:
    """The config as flat ``a.b: value`` params for the tracking run (containers stringified by the tracker)."""
    if not dataclasses.is_dataclass(cfg):
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update({f"{f.name}.{k}": v for k, v in loggable_params(value).items()})
        else:
            out[f.name] = value
    return out
