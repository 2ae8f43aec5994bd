"""Tiny trained run folders that the ``hwr serve`` tests load: a digit CNN after one step on 64 optdigits images
and a strings CRNN after one step. Made once per test session: pytest-xdist workers share them through a file
lock in the session's common temporary folder. They read badly (the tests check what is shown, not that it is
right). With them, the images the tests send: PNG bytes drawn with PIL."""

import contextlib
import dataclasses
import fcntl
import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from tiny import EAGER, STRINGS, run_config

from hwr.tasks import digits, strings

DIGIT = run_config(dataset="optdigits", limit_train=64, limit_test=20)
STRING = dataclasses.replace(STRINGS, epochs=1, steps=1, val_strings=4, test_strings=4)


def shared_run(factory: pytest.TempPathFactory, kind: str) -> Path:
    """The finished tiny ``kind`` ("digit" or "string") run folder, trained by the first test process to ask."""
    root = factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:  # each worker's folder lies in the session's common one
        root = root.parent
    out = root / f"serve-{kind}-run"
    with open(root / f"serve-{kind}-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "metrics.json").is_file():
            if kind == "digit":
                digits.run(DIGIT, out, execution=EAGER, write_figures=False)
            else:
                strings.run(STRING, out, execution=EAGER)
    return out


def png(size: tuple[int, int], lines: list[tuple[int, int, int, int]], width: int = 10) -> bytes:
    """A white PNG of ``size`` with black ``lines`` (x0, y0, x1, y1) drawn on it."""
    img = Image.new("L", size, 255)
    for line in lines:
        ImageDraw.Draw(img).line(line, fill=0, width=width)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


SEVEN = png((120, 120), [(25, 20, 95, 20), (95, 20, 45, 105)])
TWO_STROKES = png((300, 80), [(30, 10, 30, 70), (100, 10, 140, 70), (140, 10, 100, 70)], width=8)


@contextlib.contextmanager
def serving(*args: str, timeout: float = 120.0) -> Iterator[tuple[subprocess.Popen, str, list[str]]]:
    """``hwr serve ARGS --port 0`` in a subprocess: ``(process, its URL, the lines it has written so far on stdout
    and stderr)`` once it listens; stopped with Ctrl-C (SIGINT) on leaving, killed if not stopped 30 s later."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwr.cli", "serve", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # both read by one thread to their end: the server never blocks on a pipe
        text=True,
    )
    output: list[str] = []
    try:
        url = _url_of(proc, output, timeout)
        yield proc, url, output
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _url_of(proc: subprocess.Popen, output: list[str], timeout: float) -> str:
    """The URL from the server's ``serving on URL`` line, read within ``timeout`` seconds; every line the
    server writes, now and later, is appended to ``output``."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            raise AssertionError(f"hwr serve exited ({proc.wait()}) before serving:\n{''.join(output)}")
        if line.startswith("serving on "):
            return line.split()[2]
    raise AssertionError(f"hwr serve did not say where it listens within {timeout:.0f} s")
