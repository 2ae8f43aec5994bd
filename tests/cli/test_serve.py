"""``hwr serve``: the command end to end in a subprocess (it says where it listens, answers /health and
/predict over HTTP, takes --model as the old spelling of --run, stops on Ctrl-C with exit code 0), and every bad
start as one line and exit code 2 in process (no run, a folder that is not a run, a digit run as --strings, a port
in use, bad numbers)."""

import json
import signal
import socket
import urllib.error
import urllib.request

import pytest
from tiny_runs import SEVEN, serving, shared_run

from hwr.cli import main
from hwr.serve import app as web


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "digit")


def _post(url: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_answers_over_http_and_stops_on_ctrl_c(digit_run):
    with serving("--model", str(digit_run), "--max-bytes", "20000") as (proc, url, output):
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        with urllib.request.urlopen(url + "health", timeout=30) as r:
            assert json.loads(r.read())["kinds"] == ["digit"]
        status, reading = _post(url + "predict", SEVEN)
        assert status == 200 and reading["kind"] == "digit" and len(reading["alternatives"]) == 3
        status, error = _post(url + "predict", b"x" * 20_001)
        assert status == 413 and "limit of 20,000 bytes" in error["error"]
        assert _post(url + "predict", SEVEN)[0] == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    text = "".join(output)
    assert "--model RUN is now --run RUN" in text and f"digit: {digit_run}" in text and "Traceback" not in text


def _bad(capsys, *args: str, match: str) -> None:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_bad_starts_are_one_line_and_exit_2(capsys, tmp_path, digit_run):
    _bad(capsys, match="needs a trained run folder")
    _bad(capsys, "--run", str(tmp_path), "--port", "0", match="is not a run folder")
    _bad(capsys, "--run", str(tmp_path / "missing"), "--port", "0", match="does not exist")
    _bad(capsys, "--strings", str(digit_run), "--port", "0", match="is a digit run")
    _bad(capsys, "--run", str(digit_run), "--model", str(digit_run), match="give the run folder once")
    _bad(capsys, "--run", str(digit_run), "--port", "0", "--reject-below", "1.5", match="must lie in [0, 1]")
    _bad(capsys, "--run", str(digit_run), "--max-bytes", "0", match="positive number of bytes")
    _bad(capsys, "--run", str(digit_run), "--port", "70000", match="not a port number")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        _bad(capsys, "--run", str(digit_run), "--port", port, match=f"port {port} on 127.0.0.1 is in use")


def test_help_states_the_default_limit(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert f"(default {web.DEFAULT_MAX_BYTES // 2**20} MiB)" in " ".join(capsys.readouterr().out.split())
