"""Optuna study storages: an RDB storage from a URL (SQLite by default; a plain ``postgresql://`` URL uses the
PostgreSQL driver that is installed) with heartbeats and retry of stale trials, the study opened on it with the
spec's seeded sampler. Failures raise ``hwr.tune.spec.StudyError``. Optuna's ``ExperimentalWarning`` is
silenced only around the calls that raise it (``experimental_ok``), never at import. A URL is shown to people
only through ``mask_url`` (a PostgreSQL URL may hold a password); read-only commands open a storage with
``create=False``, which refuses a SQLite file that is not there instead of creating it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from hwr.tune.spec import StudyError, StudySpec

__all__ = [
    "DEFAULT_STORAGE",
    "experimental_ok",
    "mask_url",
    "open_storage",
    "open_study",
    "sqlite_path",
    "with_installed_driver",
]

DEFAULT_STORAGE = "sqlite:///runs/studies.db"


# the password of scheme://user:password@host... (up to the URL's last '@': a password typed with a raw '@' or '/'
# is masked whole), and a password given as a query parameter (libpq reads ?password=...)
_URL_PASSWORD = re.compile(r"^(?P<head>[\w+.-]+://[^:/@?#]*):(?P<password>.*)@(?=[^@]*$)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` as it may be printed or logged: a password (``user:password@`` or ``?password=``) replaced by
    ``***``; the rest (scheme, user, host, database, other query parameters) kept, so the message still says which
    storage it is about."""
    url = _URL_PASSWORD.sub(r"\g<head>:***@", url, count=1)
    return _QUERY_PASSWORD.sub(r"\g<head>***", url)


def _hide_secrets(text: str, url: str) -> str:
    """``text`` (a driver's error message) with ``url`` masked and its password, should a driver echo it, too."""
    text = text.replace(url, mask_url(url))
    secrets = [m.group("password") for m in (_URL_PASSWORD.match(url),) if m and m.group("password")]
    secrets += [m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(url)]
    for secret in (x for x in secrets if len(x) >= 3):  # a one- or two-letter password would garble the text
        text = text.replace(secret, "***")
    return text


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (``sqlite:///relative.db``, ``sqlite:////abs.db``), or None for an
    in-memory database or any other backend."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


@contextlib.contextmanager
def experimental_ok() -> Iterator[None]:
    """Silence Optuna's ``ExperimentalWarning`` inside the block only: heartbeats, stale-trial retry and some
    sampler options are marked experimental in Optuna 5, and they are what makes workers killable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


# PostgreSQL drivers SQLAlchemy knows, by its driver name (the module a URL's ``+driver`` imports), and the pip
# package that provides each
_PG_DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pg8000": "pg8000", "asyncpg": "asyncpg"}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def with_installed_driver(url: str) -> str:
    """``url`` with a plain ``postgresql://`` scheme pointed at the PostgreSQL driver that is installed: SQLAlchemy
    2.1 reads the plain scheme as psycopg (3); where that is missing and psycopg2 is installed, the URL becomes
    ``postgresql+psycopg2://...``. Any other URL (an explicit ``+driver``, SQLite) is returned as given."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # RDBStorage says what is wrong with it
    if parsed.drivername != "postgresql" or _installed(parsed.get_driver_name()) or not _installed("psycopg2"):
        return url
    return "postgresql+psycopg2" + url[len("postgresql") :]


def _driver_error(url: str, error: ImportError) -> str:
    """Which driver ``url`` asks for, that it is not installed, and which drivers are."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    missing = getattr(error, "name", None) or str(error)
    shown = mask_url(url)
    if backend != "postgresql":
        return (
            f"storage {shown!r} asks for the {backend} driver {driver!r}, which is not installed ({missing}); "
            f"install it, or use sqlite:///PATH or postgresql://..."
        )
    installed = [d for d in _PG_DRIVERS if _installed(d)]
    have = (
        f"installed: {', '.join(installed)} (use postgresql+{installed[0]}://...)"
        if installed
        else "no PostgreSQL driver is installed"
    )
    return (
        f"storage {shown!r} asks for the PostgreSQL driver {driver!r} (module {missing!r}), which is not "
        f"installed; {have}; or pip install {_PG_DRIVERS.get(driver, driver)}"
    )


def open_storage(
    url: str | None = None,
    *,
    heartbeat: int = 10,
    grace: int = 30,
    sqlite_timeout: float = 60.0,
    create: bool = True,
) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats and retry of stale trials; raises ``StudyError`` naming the URL (masked)
    when the database cannot be reached, is locked, or needs a driver that is not installed. A plain
    ``postgresql://`` URL uses the PostgreSQL driver that is installed (``with_installed_driver``);
    ``sqlite_timeout``: seconds a connection waits on a locked SQLite database. ``create=False`` (the read-only
    commands) refuses a SQLite database that does not exist rather than creating it and its folders."""
    url = with_installed_driver(url or DEFAULT_STORAGE)
    path = sqlite_path(url)
    if path is not None and not create and not path.is_file():
        raise StudyError(f"no study database at {path} (check --storage; hwr study run creates it)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"timeout": float(sqlite_timeout)}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        with experimental_ok():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=heartbeat,
                grace_period=grace,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
    except ImportError as e:
        raise StudyError(_driver_error(url, e)) from None
    except Exception as e:  # sqlalchemy.exc.OperationalError and friends
        reason = _hide_secrets(str(e).splitlines()[0] if str(e) else type(e).__name__, url)
        if "locked" in reason:
            raise StudyError(
                f"SQLite storage {mask_url(url)} is locked by another process ({reason}); wait or use PostgreSQL"
            ) from None
        raise StudyError(
            f"cannot open study storage {mask_url(url)}: {reason}; check that the server is up and the URL is right"
        ) from None


def open_study(
    spec: StudySpec, store: optuna.storages.BaseStorage, name: str, seed: int, worker: int = 0
) -> optuna.Study:
    """Create or load the study; the sampler is seeded per worker so workers do not propose the same points."""
    try:
        with experimental_ok():  # samplers and pruners with options Optuna marks experimental
            pruner = spec.pruner() if spec.pruner else optuna.pruners.NopPruner()
            return optuna.create_study(
                study_name=name,
                storage=store,
                sampler=spec.sampler(seed + 1000 * worker),
                pruner=pruner,
                directions=list(spec.directions),
                load_if_exists=True,
            )
    except ValueError as e:
        raise StudyError(f"study {name!r} exists with other directions ({e}); choose another --name") from None
