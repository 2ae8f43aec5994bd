"""``hwr serve``: the page and JSON API of ``hwr.serve`` on a local port (uvicorn). The port is taken before the
runs load (a port in use is refused at once); the runs load once; Ctrl-C stops the server."""

from __future__ import annotations

import argparse
import contextlib
import errno
import socket
import sys

from hwr.cli import UsageError
from hwr.cli.train import device_arg, device_of
from hwr.serve import reader

__all__ = ["add_parsers", "cmd_serve", "listen", "readers_of"]

_NEEDS = "hwr serve needs Starlette, uvicorn and python-multipart: pip install 'hwr[serve]'"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web page to draw or upload a digit or string and read it")
    p.add_argument("--run", default=None, help="run folder of a trained digit model (or of a strings model alone)")
    p.add_argument("--model", dest="old_run", default=None, help="the old spelling of --run (removed in 0.4)")
    p.add_argument("--strings", default=None, help="run folder of a trained strings model: the page's string mode")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    p.add_argument(
        "--reject-below",
        type=float,
        default=None,
        help=f"show '?' for a character whose confidence is below this (default {reader.DEFAULT_REJECT})",
    )
    p.add_argument(
        "--max-bytes", type=int, default=None, help="largest upload in bytes, larger ones refused (default 25 MiB)"
    )
    device_arg(p)
    p.set_defaults(func=cmd_serve)


def _run_of(args: argparse.Namespace) -> str | None:
    """``--run``, or ``--model`` (its spelling in ``hwr predict`` before 0.3) with one deprecation line."""
    if args.run is not None and args.old_run is not None:
        raise UsageError("give the run folder once: --run RUN (--model is its old spelling)")
    if args.old_run is not None:
        print("hwr: --model RUN is now --run RUN; --model will be removed in 0.4", file=sys.stderr)
    return args.run if args.run is not None else args.old_run


def readers_of(args: argparse.Namespace) -> dict[str, reader.Reader]:
    """The runs ``--run`` and ``--strings`` name, loaded once, by kind (the digit run first: the default kind)."""
    run = _run_of(args)
    if run is None and args.strings is None:
        raise UsageError("hwr serve needs a trained run folder: hwr serve --run RUN [--strings RUN]")
    device = device_of(args.device)
    loaded = [reader.load(path, device=device, reject_below=args.reject_below) for path in (run, args.strings) if path]
    if args.strings is not None and loaded[-1].kind != reader.STRING:
        raise UsageError(f"--strings {args.strings} is a digit run; give it as --run and a strings run as --strings")
    if len(loaded) == 2 and loaded[0].kind == reader.STRING:
        raise UsageError(f"--run {run} and --strings {args.strings} are both strings runs; give a digit run as --run")
    return {r.kind: r for r in sorted(loaded, key=lambda r: reader.KINDS.index(r.kind))}


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` for uvicorn to serve on; ``UsageError`` for a port in use or an
    address this machine does not have."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number; use 1-65535 (or 0 for any free port)")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise UsageError(
            f"--host {host}: cannot resolve it ({e.strerror}); use 127.0.0.1 or an address of this machine"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is in use (another server?); choose another with --port, or --port 0 for any free one"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror}); check --host and --port") from None
    sock.listen(128)  # connections wait in the backlog from here on, while the runs load
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from hwr.serve import app as web
    except ImportError as e:
        raise UsageError(f"{_NEEDS} ({e})") from None
    max_bytes = web.DEFAULT_MAX_BYTES if args.max_bytes is None else args.max_bytes
    if max_bytes < 1:
        raise UsageError(f"--max-bytes {max_bytes}: the limit must be a positive number of bytes, e.g. 5000000")
    sock = listen(args.host, args.port)
    with sock:
        readers = readers_of(args)
        application = web.create_app(readers, max_bytes=max_bytes)
        host, port = sock.getsockname()[:2]
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
        for kind, r in readers.items():
            print(f"{kind}: {r.run} (reject below {r.calibration.reject_below:.2f}, {r.calibration.source})")
        print(f"serving on {url}  (POST {url}predict; uploads up to {max_bytes:,} bytes; Ctrl-C stops)", flush=True)
        config = uvicorn.Config(application, log_level="warning", access_log=False, lifespan="off")
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops on Ctrl-C, then raises it: the normal stop
            uvicorn.Server(config).run(sockets=[sock])
    print("stopped")
    return 0
