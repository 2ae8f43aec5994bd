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

__all__ = ["DataSettings", "from_dict", "to_dict"]


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


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild ``cls`` from ``to_dict`` output, recursing into nested dataclasses (by their type hints; a field typed
    ``Any``, such as a family's ``model_config``, is passed as given for the class's ``__post_init__`` to build);
    tuples come back from lists; unknown keys are an error."""
    if not isinstance(values, dict):
        raise TypeError(f"{cls.__name__} expects a JSON object, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise InputError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    is_union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    options = typing.get_args(hint) if is_union else (hint,)
    for opt in options:
        if dataclasses.is_dataclass(opt) and isinstance(value, dict):
            return from_dict(opt, value)
        if typing.get_origin(opt) is tuple and isinstance(value, list):
            return tuple(value)
    return value


def __getattr__(name: str) -> Any:
    """Names this module held before 0.2 (``RunConfig``, ``OptimConfig``, ...), for one release (``hwr._moved``)."""
    from hwr import _moved

    return _moved.config_name(name)
