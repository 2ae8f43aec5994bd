"""Helpers for the tests that run the ``hwr`` command in a subprocess: ``hwr`` (run, fail loudly), ``bad``
(one line on stderr naming the problem, exit code 2, no traceback), ``here`` and ``bad_here`` (the same in this
process) and ``png_header_only`` (a bomb's header)."""

import os
import struct
import subprocess
import sys
import zlib


def hwr(
    *args: str, env: dict[str, str | None] | None = None, check: bool = True, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """``python -m hwr.cli ARGS`` (``env`` added to this environment; a variable given as None is removed); with
    ``check`` an exit code other than 0 fails with both streams shown."""
    merged = {**os.environ, **(env or {})}
    p = subprocess.run(
        [sys.executable, "-m", "hwr.cli", *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in merged.items() if v is not None},
        timeout=timeout,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"hwr {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def bad(*args: str, match: str | tuple[str, ...], env: dict[str, str | None] | None = None) -> None:
    """``hwr ARGS`` is refused as bad input: exit code 2 and one stderr line holding ``match`` (or one of them)."""
    p = hwr(*args, env=env, check=False)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert any(m in p.stderr for m in ((match,) if isinstance(match, str) else match)), p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def here(capsys, *args: str) -> tuple[int, str, str]:
    """``hwr ARGS`` in this process (``hwr.cli.main``, as ``python -m hwr.cli`` runs it): exit code, stdout,
    stderr. Seconds quicker than a subprocess (no second import of torch, optuna, ...); a test file keeps a
    subprocess for the console script end to end. ``capsys`` is pytest's fixture."""
    from hwr import cli

    capsys.readouterr()
    try:
        code = cli.main(list(args))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def bad_here(capsys, *args: str, match: str | tuple[str, ...]) -> None:
    """``bad`` in this process (``here``): exit code 2 and one stderr line holding ``match``."""
    code, _, err = here(capsys, *args)
    assert code == 2, (code, err)
    assert any(m in err for m in ((match,) if isinstance(match, str) else match)), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h grey pixels but carries one compressed row: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * (w + 1)))
        + chunk(b"IEND", b"")
    )
