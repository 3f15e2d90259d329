"""Configuration dataclasses: field documentation, values from the command line, plain round trips.

Every method family has one config dataclass (``SdfCarConfig``, ``ImplicitVesselConfig``,
``BlendConfig``, ``TrainerConfig``, ...). Its defaults live in that class and nowhere else; the
string under each field is the field's documentation and its command-line help. This module
holds what every such class needs and nothing method-specific (it imports neither torch nor a
method):

- :func:`field_docs`: the docstring under each field (read from the class's source with ``ast``);
- :func:`parse_value`: a command-line string (``--set field=value``) -> a value of the field's
  type (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``X | None``, tuples);
- :func:`build_config`: a config from named values (the command line's flags and its ``--set``
  items, or a saved ``config.yaml``), every name checked against the dataclass;
- :func:`config_arguments`: the ``--set`` words that rebuild a config (for the command that
  reproduces a run);
- :func:`describe_config`: the table that ``vesselfield config show`` prints.

A config class may declare two class variables:

- ``key_fields``: fields whose values choose the defaults of others (``method``, ``preset``);
  they are recorded first in a reproducing command, and the others are compared with the
  config built from them alone;
- ``free_on_resume``: fields that may change when a run is resumed (iteration counts, time
  limits); see :func:`vesselfield.io.run_folder.prepare_run_folder`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import textwrap
import types
import typing
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from vesselfield.errors import VesselfieldError

__all__ = [
    "build_config",
    "check_numbers",
    "config_values",
    "config_arguments",
    "config_to_dict",
    "describe_config",
    "field_docs",
    "format_value",
    "parse_assignments",
    "parse_value",
]

_NONE_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _require_config_class(cls) -> type:
    cls = cls if isinstance(cls, type) else type(cls)
    if not dataclasses.is_dataclass(cls):
        raise VesselfieldError(f"{cls.__name__} is not a config dataclass")
    return cls


@lru_cache(maxsize=None)
def field_docs(cls) -> dict[str, str]:
    """``{field: docstring}``: the string literal written under each field of a dataclass.

    Classes inherit the documentation of their bases' fields. Fields without a string are
    absent from the dict.
    """
    cls = _require_config_class(cls)
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body
        for node, after in zip(body, body[1:] + [None]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


@lru_cache(maxsize=None)
def _field_types(cls) -> dict[str, Any]:
    module = inspect.getmodule(cls)
    hints = typing.get_type_hints(cls, globalns=vars(module) if module else None)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _union_args(tp) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _type_text(tp) -> str:
    args = _union_args(tp)
    if args is not None:
        return " | ".join(_type_text(a) for a in args)
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (tuple, list):
        inner = typing.get_args(tp)
        return f"{typing.get_origin(tp).__name__}[{', '.join(_type_text(a) for a in inner if a is not Ellipsis)}]"
    return getattr(tp, "__name__", str(tp))


def _convert(tp, value, name: str):
    """``value`` (a string from the command line, or a value from YAML/Python) as type ``tp``."""
    args = _union_args(tp)
    if args is not None:
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)):
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, name)
            except VesselfieldError as exc:
                errors.append(str(exc))
        raise VesselfieldError(errors[0] if len(errors) == 1 else f"{name}: {value!r} is not {_type_text(tp)}")
    if tp is Any:
        return value
    if value is None:
        raise VesselfieldError(f"{name} cannot be empty (None); it takes {_type_text(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):  # a nested config read from config.yaml
            return build_config(tp, value)
        raise VesselfieldError(f"{name} is a group of settings: set its fields with --set {name}.FIELD=VALUE")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        text = value.strip() if isinstance(value, str) else value
        if text not in choices:
            raise VesselfieldError(f"unknown {name} {value!r}: use one of {', '.join(map(str, choices))}")
        return text
    if origin in (tuple, list):
        items = [v.strip() for v in value.strip().strip("[]()").split(",")] if isinstance(value, str) else list(value)
        inner = typing.get_args(tp)
        if origin is tuple and inner and inner[-1] is not Ellipsis:
            if len(items) != len(inner):
                raise VesselfieldError(f"{name} needs {len(inner)} values, got {len(items)}")
            return tuple(_convert(t, v, name) for t, v in zip(inner, items))
        element = inner[0] if inner else Any
        converted = [_convert(element, v, name) for v in items]
        return tuple(converted) if origin is tuple else converted
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE_WORDS:
            return True
        if text in _FALSE_WORDS:
            return False
        raise VesselfieldError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise VesselfieldError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            number = float(str(value).strip()) if not isinstance(value, float) else value
        except ValueError:
            raise VesselfieldError(f"{name} must be an integer, got {value!r}") from None
        if not (math.isfinite(number) and float(number).is_integer()):
            raise VesselfieldError(f"{name} must be an integer, got {value!r}")
        return int(number)
    if tp is float:
        if isinstance(value, bool):
            raise VesselfieldError(f"{name} must be a number, got {value!r}")
        try:
            return float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise VesselfieldError(f"{name} must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise VesselfieldError(f"{name} must be text, got {value!r}")
        return value
    return value


def parse_value(cls, name: str, value):
    """``value`` for field ``name`` of config class ``cls``, converted to and checked against its type.

    Strings (from ``--set``) are parsed: ``none``/``null`` for optional fields, ``true``/``false``
    for booleans, ``1e-3`` for floats, ``a,b,c`` for tuples. Values that already have a type
    (from YAML or Python) are checked; an ``int`` is accepted for a ``float`` field.
    """
    cls = _require_config_class(cls)
    head, dot, rest = name.partition(".")
    types_ = _field_types(cls)
    if head not in types_:
        raise VesselfieldError(_unknown_field_message(cls, head))
    if dot:
        if not dataclasses.is_dataclass(types_[head]):
            raise VesselfieldError(f"{head} is not a group of settings: use --set {head}=VALUE")
        return parse_value(types_[head], rest, value)
    return _convert(types_[head], value, name)


def _unknown_field_message(cls, name: str) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{_config_name(cls)} has no field {name!r}{hint}; see `vesselfield config show`"


def _config_name(cls) -> str:
    return getattr(cls, "config_name", cls.__name__)


def parse_assignments(items: Iterable[str] | None) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a malformed or repeated item is an error."""
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise VesselfieldError(f"--set takes FIELD=VALUE, got {item!r}")
        if name in out:
            raise VesselfieldError(f"--set gives {name} twice")
        out[name] = value
    return out


def config_values(cls, values: Mapping[str, Any] | None = None, assignments: Iterable[str] | None = None) -> dict:
    """The checked field values that :func:`build_config` passes to ``cls``: the one place where a
    command's flags and its ``--set`` items are merged.

    ``--set group.FIELD=VALUE`` (or a ``values`` key ``"group.FIELD"``, for a flag such as
    ``--epochs``) sets a field of a nested config (e.g. ``trainer.epochs=50``); the group's other
    fields keep the values given in ``values`` or the outer class's default for the group.
    A field given both in ``values`` and by ``--set`` with different values is an error.
    """
    cls = _require_config_class(cls)
    types_ = _field_types(cls)
    given = {k: v for k, v in dict(values or {}).items() if v is not None}
    groups: dict[str, list[str]] = {}
    for k in [k for k in given if "." in k]:  # a flag that sets a nested field ({"trainer.epochs": 5})
        parse_value(cls, k, given[k])
        head, _, rest = k.partition(".")
        groups.setdefault(head, []).append(f"{rest}={format_value(given.pop(k))}")
    checked = {k: parse_value(cls, k, v) for k, v in given.items()}
    for name, text in parse_assignments(assignments).items():
        head, dot, rest = name.partition(".")
        if dot:
            parse_value(cls, name, text)  # checks the name and the value now
            groups.setdefault(head, []).append(f"{rest}={text}")
            continue
        value = parse_value(cls, name, text)
        if name in checked and checked[name] != value:
            raise VesselfieldError(f"{name} is given twice: {checked[name]!r} and --set {name}={text}")
        checked[name] = value
    for head, items in groups.items():
        base = checked.get(head)
        if dataclasses.is_dataclass(base):
            start = dataclasses.asdict(base)
        else:
            # The group's default is the outer class's (its default_factory), not the nested
            # class's own defaults: a method's trainer settings differ from TrainerConfig().
            # Only the values where the two differ are carried, so that fields a nested preset
            # fills in are filled again for the preset the items choose.
            spec = {f.name: f for f in dataclasses.fields(cls)}[head]
            outer = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
            start = {}
            if dataclasses.is_dataclass(outer):
                own = dataclasses.asdict(types_[head]())
                start = {k: v for k, v in dataclasses.asdict(outer).items() if own.get(k) != v}
        # The items override the group's starting values (they are not a second, conflicting flag).
        checked[head] = build_config(types_[head], {**start, **config_values(types_[head], None, items)})
    return checked


def build_config(cls, values: Mapping[str, Any] | None = None, assignments: Iterable[str] | None = None):
    """A config of class ``cls`` from named values and ``--set`` items, every name and value checked.

    Args:
        cls: the config dataclass.
        values: field values (the command line's dedicated flags such as ``--iterations``, or a
            dict read from ``config.yaml``); ``None`` entries mean "not given" and are dropped.
        assignments: ``FIELD=VALUE`` strings from ``--set`` (``group.FIELD=VALUE`` for a field of
            a nested config). A field given both here and in ``values`` with different values is
            an error.

    Returns:
        ``cls(**checked values)`` (:func:`config_values`); the class's ``__post_init__`` fills the
        remaining defaults and rejects contradictory combinations.
    """
    return _require_config_class(cls)(**config_values(cls, values, assignments))


def config_to_dict(config) -> dict:
    """``dataclasses.asdict`` of a config (nested configs as dicts) with tuples as lists: plain YAML/JSON."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(config))


def format_value(value) -> str:
    """A field value as ``--set`` reads it back (floats exactly, ``none``, ``true``, ``a,b``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def config_arguments(config) -> list[str]:
    """The ``--set FIELD=VALUE`` words that rebuild ``config`` from the command line.

    The class's ``key_fields`` come first, always; then every other field whose value differs
    from the config built from the key fields alone (so a preset's own values are not repeated).
    """
    return _arguments(config, "")


def _arguments(config, prefix: str) -> list[str]:
    cls = type(config)
    keys = tuple(getattr(cls, "key_fields", ()))
    base = cls(**{k: getattr(config, k) for k in keys})
    words: list[str] = []
    for f in dataclasses.fields(cls):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            words += _arguments(value, f"{prefix}{f.name}.")
        elif f.name in keys or value != getattr(base, f.name):
            words += ["--set", f"{prefix}{f.name}={format_value(value)}"]
    return words


def describe_config(config_or_cls, **key_values) -> str:
    """Every field of a config: name, type, value and documentation, as ``config show`` prints it.

    ``config_or_cls``: a config or a config class (then built from ``key_values``, e.g.
    ``preset="gpu"``, so the values shown are that preset's).
    """
    if isinstance(config_or_cls, type):
        config = build_config(config_or_cls, key_values)
    else:
        config = config_or_cls
    return "\n".join(_describe(config, ""))


def _describe(config, prefix: str) -> list[str]:
    cls = type(config)
    docs = field_docs(cls)
    types_ = _field_types(cls)
    lines = []
    for f in dataclasses.fields(cls):
        value = getattr(config, f.name)
        doc = docs.get(f.name, "")
        if dataclasses.is_dataclass(value):
            lines.append(f"{prefix}{f.name}: {doc} (set with --set {prefix}{f.name}.FIELD=VALUE)")
            lines += _describe(value, f"{prefix}{f.name}.")
            continue
        lines.append(f"{prefix}{f.name} = {format_value(value)}    ({_type_text(types_[f.name])})")
        lines += ["    " + line for line in textwrap.wrap(doc, 92)] if doc else []
    return lines


def _is_int_type(tp) -> bool:
    args = _union_args(tp)
    return tp is int or (args is not None and int in args and float not in args)


def free_on_resume(config) -> frozenset:
    """Fields of ``config`` that may change when a run is resumed (its class's ``free_on_resume``),
    with those of nested groups as ``group.field`` (``trainer.epochs``)."""
    free = set(getattr(type(config), "free_on_resume", ()))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            free |= {f"{f.name}.{k}" for k in free_on_resume(value)}
    return frozenset(free)


def changed_fields(old: Mapping[str, Any], config, ignore: Sequence[str] = ()) -> list[str]:
    """``"name old -> new"`` for every field of ``config`` whose value differs from ``old`` (a saved dict);
    fields of nested groups compare one by one, as ``group.field`` (also in ``ignore``)."""
    now = config_to_dict(config)
    out = []
    for k in now:
        if k in ignore or k not in old or old[k] == now[k]:
            continue
        if isinstance(now[k], dict) and isinstance(old[k], dict):
            out += [f"{k}.{name} {old[k][name]!r} -> {value!r}" for name, value in now[k].items()
                    if f"{k}.{name}" not in ignore and name in old[k] and old[k][name] != value]
        else:
            out.append(f"{k} {old[k]!r} -> {now[k]!r}")
    return out


def check_numbers(config, *, positive: Sequence[str] = (), non_negative: Sequence[str] = (),
                  at_least_one: Sequence[str] = (), flags: Mapping[str, str] | None = None) -> None:
    """One-line errors for numeric fields out of range, for a config's ``__post_init__``.

    ``positive``: finite and > 0; ``non_negative``: finite and >= 0; ``at_least_one``: integers
    >= 1. A field that is None (optional, "not set") passes. ``flags`` names the command-line
    flag of a field in its message (``{"time_limit_s": "--time-limit"}``).
    """
    flags = dict(flags or {})
    types_ = _field_types(type(config))

    def fail(name, value, what):
        label = f"{name} ({flags[name]})" if name in flags else name
        raise VesselfieldError(f"{label} must be {what}, got {value!r}")

    for names, what, ok in ((positive, "positive", lambda v: math.isfinite(v) and v > 0),
                            (non_negative, "non-negative", lambda v: math.isfinite(v) and v >= 0)):
        for name in names:
            value = getattr(config, name)
            if value is None:
                continue
            integer = _is_int_type(types_.get(name))
            kind = f"a {what} integer" if integer else f"a {what} number"
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
                    or not ok(float(value)):
                fail(name, value, kind)
    for name in at_least_one:
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(name, value, "an integer >= 1")

