"""Helpers for the tests that run the ``hwr`` command in a subprocess: ``hwr`` (run, fail loudly), ``bad``
(one line on stderr naming the problem, exit code 2, no traceback), ``here`` and ``bad_here`` (the same in this
process) and ``png_header_only`` (a bomb's header).

A command runs in a process of its own, forked from a zygote: one process per test worker that imported torch and
hwr's command modules once (multiprocessing's forkserver with those modules preloaded), so each of the suite's
~80 commands skips the 2-3 s of CPU a fresh interpreter spends importing them; the child then does what
``python -m hwr.cli ARGS`` does (``sys.exit(hwr.cli.main(ARGS))``, its own streams, exit code and environment).
A command runs in a fresh interpreter instead where the test asks (``fresh=True``: each CLI test file keeps its
end-to-end runs of the console script that way), where its environment differs from the zygote's in a variable
read at import (anything but ``HWR_*``, ``COLUMNS``, ``PYTEST_*`` and ``TORCHINDUCTOR_CACHE_DIR``, which are read
when a command starts: ``hwr.cli.environment``), and everywhere under ``HWR_TEST_SUBPROCESS=1``."""

import multiprocessing
import os
import runpy
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

# what a command imports on its way in (torch, the tasks, Optuna and the study code, inductor's entry point)
PRELOAD = ["cli_run", "torch", "hwr.cli", "hwr.tasks.digits", "hwr.tasks.strings", "hwr.tune.study"]
PRELOAD += ["torch._inductor.compile_fx"]
READ_AT_START = ("HWR_", "PYTEST_", "COLUMNS", "TORCHINDUCTOR_CACHE_DIR")
_zygote: dict[str, object] = {}


def _context() -> tuple[multiprocessing.context.BaseContext, dict[str, str]]:
    """The forkserver context (started on first use) and the environment its server started with."""
    if not _zygote:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _zygote.update(ctx=ctx, env=dict(os.environ))
    return _zygote["ctx"], _zygote["env"]


def _forkable(env: dict[str, str]) -> bool:
    """Whether ``env`` differs from the zygote's only in variables hwr reads when a command starts."""
    base = _context()[1]
    return all(base.get(k) == env.get(k) or k.startswith(READ_AT_START) for k in base.keys() | env.keys())


def _child(argv: list[str], env: dict[str, str], out: str, err: str, cwd: str | None) -> None:
    """In the forked process: this command's environment, streams, directory and argv, then what the interpreter
    runs: ``hwr.cli.main`` for ``["-m", "hwr.cli", ...]``, else the script ``argv[0]`` as ``__main__``."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    if cwd is not None:
        os.chdir(cwd)
    if argv[:2] == ["-m", "hwr.cli"]:
        from hwr import cli

        sys.argv = [str(Path(cli.__file__).with_name("__main__.py")), *argv[2:]]
        sys.exit(cli.main(argv[2:]))
    sys.argv = list(argv)
    sys.path.insert(0, str(Path(argv[0]).resolve().parent))  # as `python SCRIPT` puts the script's folder first
    runpy.run_path(argv[0], run_name="__main__")


def python(
    *argv: str,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float = 1800,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """``python ARGV`` (``-m hwr.cli ...`` or a script and its arguments) with both streams captured, as
    ``subprocess.run`` returns it: in a child of the zygote, or a fresh interpreter (``fresh``; the module
    docstring says when else)."""
    env = dict(os.environ) if env is None else env
    forkserver = "forkserver" in multiprocessing.get_all_start_methods()  # not on Windows
    if fresh or not forkserver or os.environ.get("HWR_TEST_SUBPROCESS") == "1" or not _forkable(env):
        return subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
        )
    with tempfile.TemporaryDirectory() as d:
        out, err = os.path.join(d, "out"), os.path.join(d, "err")
        p = _context()[0].Process(target=_child, args=(list(argv), env, out, err, None if cwd is None else str(cwd)))
        p.start()
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()
            raise subprocess.TimeoutExpired([sys.executable, *argv], timeout)
        text = [Path(f).read_text() if os.path.exists(f) else "" for f in (out, err)]
    code = p.exitcode
    p.close()
    return subprocess.CompletedProcess([sys.executable, *argv], code, *text)


def hwr(
    *args: str,
    env: dict[str, str | None] | None = None,
    check: bool = True,
    timeout: float = 1800,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """``python -m hwr.cli ARGS`` (``env`` added to this environment; a variable given as None is removed), in a
    child of the zygote or, with ``fresh`` (or where the module docstring says), a fresh interpreter; with
    ``check`` an exit code other than 0 fails with both streams shown."""
    merged = {**os.environ, **(env or {})}
    p = python(
        "-m", "hwr.cli", *args, env={k: v for k, v in merged.items() if v is not None}, timeout=timeout, fresh=fresh
    )
    if check and p.returncode != 0:
        raise AssertionError(f"hwr {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def bad(
    *args: str, match: str | tuple[str, ...], env: dict[str, str | None] | None = None, fresh: bool = False
) -> None:
    """``hwr ARGS`` is refused as bad input: exit code 2 and one stderr line holding ``match`` (or one of them)."""
    p = hwr(*args, env=env, check=False, fresh=fresh)
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
