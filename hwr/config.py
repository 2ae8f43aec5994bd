"""Configs as frozen dataclasses and their exact round trip through JSON, and where data lives.

``to_dict`` / ``from_dict`` are generic over any (nested) frozen dataclass: no type is special-cased here. Each
task's config (``hwr.tasks.digits.config.RunConfig``, ``hwr.tasks.strings.config.StringsConfig``) is what
``config.json`` holds; what an old ``config.json`` carried besides is the run folder's business
(``hwr.runs.read_config``). ``DataSettings`` is the one value that says where data sets live and whether they may
be downloaded; the CLI builds it from the environment (``hwr.cli``), the library only receives it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwr.errors import InputError

__all__ = ["ConfigTypeError", "DataSettings", "from_dict", "to_dict"]


class ConfigTypeError(InputError, TypeError):
    """A config value of the wrong type (a hand-edited config.json, a study's stored config): names the field."""


@dataclass(frozen=True)
class DataSettings:
    """Where data sets live (``root``) and whether they may be downloaded from the internet (``network``; MNIST
    still comes from the package registry without it). The default: ``~/.cache/hwr``, downloads allowed."""

    root: Path = dataclasses.field(default_factory=lambda: Path.home() / ".cache" / "hwr")
    network: bool = True
    skip_bad: bool = False  # a user's image folder: skip unreadable or blank images (counted) instead of refusing

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())


def to_dict(obj: Any) -> Any:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Rebuild ``cls`` from ``to_dict`` output, recursing into nested dataclasses (by their type hints; a field typed
    ``Any``, such as a family's ``model_config``, is passed as given for the class's ``__post_init__`` to build);
    tuples come back from lists; unknown keys and values of the wrong type are an ``InputError`` naming the field
    (``optim.lr must be a float, got 'abc' (str)``). Values are checked, never converted, so a config's JSON (and
    every hash of it) is the same after the round trip. ``where`` is the field path of a nested config."""
    if not isinstance(values, dict):
        what = f"{where} must be a JSON object ({cls.__name__})" if where else f"{cls.__name__} expects a JSON object"
        raise ConfigTypeError(f"{what}, got {_shown(values)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise InputError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(fields)}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}" if where else name) for name, value in values.items()}
    return cls(**kwargs)


def _shown(value: Any) -> str:
    return f"{value!r} ({'null' if value is None else type(value).__name__})"


def _name(hint: Any) -> str:
    """How a type hint reads in an error message."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if origin is tuple:
        return "a list"
    if dataclasses.is_dataclass(hint):
        return f"a JSON object ({hint.__name__})"
    names = {int: "an int", float: "a float", bool: "true or false", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the field typed ``hint`` holds it (nested dataclasses built, lists made tuples), or an
    ``InputError`` naming ``where`` and the type wanted."""
    if hint is Any:
        return value
    is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    options = typing.get_args(hint) if is_union else (hint,)
    if value is None and (type(None) in options):
        return None
    for opt in options:
        ok, built = _as(opt, value, where)
        if ok:
            return built
    wanted = " or ".join(_name(o) for o in options if o is not type(None))
    raise ConfigTypeError(f"{where} must be {wanted}, got {_shown(value)}")


def _as(hint: Any, value: Any, where: str) -> tuple[bool, Any]:
    """``(True, value as hint holds it)`` when ``value`` fits ``hint``, else ``(False, None)``."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True, value
    if dataclasses.is_dataclass(hint):
        return (True, from_dict(hint, value, where)) if isinstance(value, dict) else (False, None)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False, None
        args = typing.get_args(hint)
        each = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if each and len(each) != len(value):
            return False, None
        return True, tuple(_coerce(h, v, f"{where}[{i}]") for i, (h, v) in enumerate(zip(each, value)))
    if origin is typing.Literal:
        return (value in typing.get_args(hint)), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # a hint this checker does not model (a protocol, a generic): as given


def __getattr__(name: str) -> Any:
    """Names this module held before 0.2 (``RunConfig``, ``OptimConfig``, ...), for one release (``hwr._moved``)."""
    from hwr import _moved

    return _moved.config_name(name)
