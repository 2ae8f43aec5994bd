"""The HTTP side of ``hwr serve``: a Starlette app over ``hwr.serve.reader``.

    GET  /          the page (``static/index.html``: plain HTML and JavaScript shipped in the package)
    GET  /static/*  its script and style sheet
    GET  /health    {"status": "ok", "kinds": [...], "default_kind": ..., "max_bytes": N, "runs": {kind: {...}}}
    POST /predict   an image file as the multipart file field ``image`` or as the raw body, ``?kind=digit|string``
                    (default: ``default_kind``) -> the reading (``reader.read``)

Every error is JSON ``{"error": "..."}`` that names the problem and the fix: 400 for no image or a file that is
not one (the library's ``InputError`` text), 413 for a body over ``max_bytes`` (refused from its Content-Length
before a byte is read, else as soon as the streamed body passes the limit: never held whole), 404 / 405 for
other paths and methods, 500 for a bug (the server goes on serving). The runs are loaded once by the caller;
inference runs off the event loop (``/health`` answers meanwhile), one request at a time (a lock: torch's own
threads parallelise each one).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive

from hwr.errors import InputError
from hwr.serve import reader as rd

__all__ = ["DEFAULT_MAX_BYTES", "FIELD", "STATIC", "create_app", "too_large"]

DEFAULT_MAX_BYTES = 25 * 1024 * 1024  # 25 MiB: a 48-50 MP phone photo (10-20 MB as JPEG) fits; a digit needs far less
FIELD = "image"  # the multipart field the page and ``curl -F image=@FILE`` send
STATIC = Path(__file__).with_name("static")
_NAME_CHARS = 80  # an upload's file name is quoted in errors up to this length


class _Service(NamedTuple):
    readers: Mapping[str, rd.Reader]
    max_bytes: int
    lock: threading.Lock


def too_large(limit: int, size: int | None = None) -> str:
    """The 413 message: the body's size when known, the limit, and the two fixes."""
    got = f"is {size:,} bytes, over" if size is not None else "passes"
    return (
        f"the upload {got} this server's limit of {limit:,} bytes ({limit / 2**20:.2f} MiB); send a "
        "smaller image (a digit needs a few hundred pixels across at most) or restart the server with a larger "
        "--max-bytes"
    )


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that counts the body's bytes and raises a 413 as soon as they pass ``limit``."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, too_large(limit))
        return message

    return limited


def _declared_size(request: Request, limit: int) -> None:
    """Refuse a body whose Content-Length passes ``limit`` before reading any of it."""
    length = request.headers.get("content-length")
    if length is None:
        return
    if not length.isdigit():
        raise HTTPException(400, f"Content-Length {length[:20]!r} is not a number of bytes")
    if int(length) > limit:
        raise HTTPException(413, too_large(limit, int(length)))


async def _image(request: Request, limit: int) -> tuple[bytes, str]:
    """``(bytes, name)`` of the image a request carries: the multipart field ``image`` or the raw body."""
    _declared_size(request, limit)
    request = Request(request.scope, _limited(request.receive, limit))
    how = f"send the image file as the multipart field '{FIELD}' (curl -F {FIELD}=@digit.png URL) or as the raw body"
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        try:
            upload = form.get(FIELD)
            if not isinstance(upload, UploadFile):
                raise HTTPException(400, f"no file in the field '{FIELD}'; {how}")
            name = (upload.filename or "upload")[:_NAME_CHARS]
            data = await upload.read()
        finally:
            await form.close()  # the spooled temporary files
    else:
        data, name = await request.body(), "upload"
    if not data:
        raise HTTPException(400, f"{name}: empty upload; {how}")
    return data, name


def _kind(request: Request, service: _Service) -> str:
    """The reader ``?kind=`` names (default: a digit run when there is one), refused when not loaded."""
    kind = request.query_params.get("kind") or next(iter(service.readers))
    if kind not in rd.KINDS:
        raise HTTPException(400, f"unknown kind {kind[:20]!r}; use ?kind=digit or ?kind=string")
    if kind not in service.readers:
        flag = "--strings RUN" if kind == rd.STRING else "--run RUN (a digit run)"
        raise HTTPException(400, f"this server has no {kind} model; start it with {flag}")
    return kind


async def predict(request: Request) -> Response:
    service: _Service = request.app.state.service
    kind = _kind(request, service)
    data, name = await _image(request, service.max_bytes)

    def locked() -> dict[str, Any]:
        with service.lock:
            return rd.read(service.readers[kind], data, name)

    return JSONResponse(await run_in_threadpool(locked))


async def health(request: Request) -> Response:
    service: _Service = request.app.state.service
    runs = {
        kind: {
            "run": r.run.name,
            "reject_below": r.calibration.reject_below,
            "threshold_from": r.calibration.source,
            "temperature": r.calibration.temperature,
        }
        for kind, r in service.readers.items()
    }
    return JSONResponse(
        {
            "status": "ok",
            "kinds": list(service.readers),
            "default_kind": next(iter(service.readers)),
            "max_bytes": service.max_bytes,
            "runs": runs,
        }
    )


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _input_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _bug(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        {"error": f"internal error ({type(exc).__name__}: {exc}); this is a bug in hwr, not in your image"},
        status_code=500,
    )


def create_app(readers: Mapping[str, rd.Reader], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Starlette:
    """The app serving ``readers`` (kind -> loaded run; the first is the default kind), refusing bodies over
    ``max_bytes``."""
    if not readers:
        raise InputError("the server needs at least one run: --run RUN (a digit or a strings run)")
    if max_bytes < 1:
        raise InputError(
            f"the size limit must be a positive number of bytes, got {max_bytes}; e.g. --max-bytes 5000000"
        )
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/health", health),
            Route("/predict", predict, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={HTTPException: _http_error, InputError: _input_error, Exception: _bug},
    )
    app.state.service = _Service(dict(readers), max_bytes, threading.Lock())
    return app
