"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` from the Debian package, run as the ``postgres``
system user (the server refuses root) in a temporary data directory, on a free loopback port."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def available() -> str | None:
    """None when a server can be started, else the reason it cannot."""
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        return "PostgreSQL server binaries not found; install the Debian package postgresql (.ci/run does)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def server() -> Iterator[str]:
    """Start a throwaway server and yield a SQLAlchemy URL (``postgresql+psycopg2://...``) to a fresh database."""
    reason = available()
    if reason:
        raise RuntimeError(reason)
    tmp = Path(tempfile.mkdtemp(prefix="hwr-pg-"))
    data = tmp / "data"
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run(
        _as_postgres([_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
        env=env,
    )
    log = tmp / "server.log"
    subprocess.run(
        _as_postgres(
            [
                _bin("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c max_connections=50",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        _wait(port)
        yield url
    finally:
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True, env=env
        )
        shutil.rmtree(tmp, ignore_errors=True)


def _wait(port: int, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"PostgreSQL did not accept connections on port {port}")
