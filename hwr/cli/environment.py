"""The one reader of the environment: what the ``HWR_*`` variables and ``TORCHINDUCTOR_CACHE_DIR`` say, made
explicit at process start and passed down as arguments (the library reads no environment).

- ``HWR_DATA``: where data sets live (default ``~/.cache/hwr``); ``HWR_OFFLINE=1``: no internet downloads (MNIST
  still comes from the package registry). Together they are one ``hwr.config.DataSettings``.
- ``HWR_THREADS``: torch's intra-op threads (study workers on one machine split the cores this way).
- ``HWR_NO_MALLOPT=1``: leave glibc's allocator as it is (``hwr.engine.runtime.tune_allocator``).
- ``TORCHINDUCTOR_CACHE_DIR``: the inductor cache shared by processes and study workers (default
  ``~/.cache/hwr/inductor``, exported so child processes share it).
- ``HWR_SQLITE_TIMEOUT``: seconds a study worker waits on a locked SQLite database (default 60).
- ``COLUMNS``: the width of tables and lines (default: the terminal's; off a terminal, tables' natural width).

The CLI, the benchmarks and the tests call ``start()`` once; commands read ``read()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hwr.config import DataSettings
from hwr.errors import InputError

__all__ = ["Environment", "data_at", "from_a_library", "quiet_library_warnings", "read", "start"]


@dataclass(frozen=True)
class Environment:
    """What the environment asks of this process."""

    data: DataSettings
    threads: int
    malloc: bool
    inductor_cache: Path
    sqlite_timeout: float
    columns: int | None = None


def _number(env: Mapping[str, str], name: str, default: str, kind: type) -> float | int:
    value = env.get(name) or default
    try:
        return kind(value)
    except ValueError:
        raise InputError(f"${name} must be a number, got {value!r}; unset it or give e.g. {default}") from None


def read(environ: Mapping[str, str] | None = None) -> Environment:
    """The settings in ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    data = env.get("HWR_DATA")
    root = Path(data).expanduser() if data else Path.home() / ".cache" / "hwr"
    cache = env.get("TORCHINDUCTOR_CACHE_DIR") or Path.home() / ".cache" / "hwr" / "inductor"
    return Environment(
        data=DataSettings(root, env.get("HWR_OFFLINE") != "1"),
        threads=int(_number(env, "HWR_THREADS", "0", int)),
        malloc=env.get("HWR_NO_MALLOPT") != "1",
        inductor_cache=Path(cache).expanduser(),
        sqlite_timeout=float(_number(env, "HWR_SQLITE_TIMEOUT", "60", float)),
        columns=int(env["COLUMNS"]) if env.get("COLUMNS", "").strip().isdigit() and int(env["COLUMNS"]) > 0 else None,
    )


def data_at(
    root: str | os.PathLike, environ: Mapping[str, str] | None = None, *, skip_bad: bool = False
) -> DataSettings:
    """The data settings of a command given ``--root`` / ``--data-root`` (whose default is ``$HWR_DATA``):
    that root, downloads as ``$HWR_OFFLINE`` allows, and ``--skip-bad`` for a user's image folder."""
    return DataSettings(Path(root), read(environ).data.network, skip_bad)


def start(environ: Mapping[str, str] | None = None) -> Environment:
    """Apply the process settings ``environ`` asks for (``hwr.engine.runtime.configure``) and return them."""
    from hwr.engine import runtime

    env = read(environ)
    runtime.configure(threads=env.threads, malloc=env.malloc, inductor_cache=env.inductor_cache)
    if env.columns is not None:
        import importlib

        importlib.import_module("hwr.report.console").set_width(env.columns)  # the module, not report.console
    return env


_LIBRARIES = ("optuna", "matplotlib", "sqlalchemy", "alembic")


def from_a_library(category: type[Warning], filename: str) -> bool:
    """Whether a warning is a library's own notice (raised in site-packages, or a class a library defines):
    the user cannot act on it, so the CLI shows it only under ``--debug``."""
    where = filename.replace("\\", "/")
    inside = "/site-packages/" in where or "/dist-packages/" in where
    return inside or category.__module__.split(".")[0] in _LIBRARIES


def quiet_library_warnings() -> None:
    """Show hwr's own warnings (a retired import path, a slow fallback) and hide the libraries' (``from_a_library``,
    e.g. Optuna's experimental-feature notices and matplotlib's layout notes with their site-packages paths)."""
    import warnings

    show = warnings.showwarning

    def shown(message, category, filename, lineno, file=None, line=None):
        if not from_a_library(category, filename):
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = shown
