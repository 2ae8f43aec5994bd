"""hwr.serve.app through Starlette's TestClient (no server, no browser): the page and its files, /health,
/predict with a multipart field or a raw body (the reading equals ``reader.read``'s), the size limit (413 from
Content-Length before any byte is read, and while a body of unknown length streams), 400s that say what to fix,
a bug as a JSON 500, and the next request served after every error."""

import asyncio
import io

import pytest
from PIL import Image
from starlette.testclient import TestClient
from tiny_runs import SEVEN, TWO_STROKES, shared_run

from hwr.errors import InputError
from hwr.serve import app as web
from hwr.serve import reader as rd

LIMIT = 50_000


@pytest.fixture(scope="module")
def readers(tmp_path_factory):
    return {
        "digit": rd.load(shared_run(tmp_path_factory, "digit")),
        "string": rd.load(shared_run(tmp_path_factory, "string")),
    }


@pytest.fixture(scope="module")
def client(readers):
    return TestClient(web.create_app(readers, max_bytes=LIMIT))


def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needed in ('id="canvas"', 'id="read"', 'id="undo"', 'id="clear"', 'id="upload"', 'id="error"', "app.js"):
        assert needed in page.text
    assert client.get("/static/app.js").status_code == 200 and "/predict" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200


def test_health_names_the_runs_and_the_limit(client, readers):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["kinds"] == ["digit", "string"] and h["default_kind"] == "digit"
    assert h["max_bytes"] == LIMIT and h["runs"]["digit"]["run"] == readers["digit"].run.name
    assert h["runs"]["string"]["reject_below"] == rd.DEFAULT_REJECT


def test_predict_reads_a_multipart_field_or_a_raw_body(client, readers):
    want = rd.read(readers["digit"], SEVEN)
    got = client.post("/predict", files={"image": ("seven.png", SEVEN, "image/png")})
    assert got.status_code == 200 and got.json() == want
    raw = client.post("/predict?kind=digit", content=SEVEN, headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json() == want
    s = client.post("/predict?kind=string", files={"image": ("s.png", TWO_STROKES, "image/png")})
    assert s.status_code == 200 and s.json() == rd.read(readers["string"], TWO_STROKES)


def test_bad_requests_are_400s_that_say_what_to_do(client):
    cases = [
        ({"files": {"image": ("notes.txt", b"not a picture", "text/plain")}}, "notes.txt: not an image file"),
        ({"files": {"photo": ("seven.png", SEVEN, "image/png")}}, "no file in the field 'image'"),
        ({"content": b""}, "empty upload"),
    ]
    for kwargs, message in cases:
        r = client.post("/predict", **kwargs)
        assert r.status_code == 400 and message in r.json()["error"], r.text
    r = client.post("/predict?kind=word", content=SEVEN)
    assert r.status_code == 400 and "?kind=digit or ?kind=string" in r.json()["error"]
    assert client.get("/predict").status_code == 405 and "error" in client.get("/nowhere").json()
    assert client.post("/predict", content=SEVEN).status_code == 200  # still serving


def test_too_large_bodies_are_413s_naming_the_limit(client):
    big = b"\x89PNG" + b"x" * (LIMIT + 1)
    r = client.post("/predict", files={"image": ("big.png", big, "image/png")})
    assert (
        r.status_code == 413 and f"limit of {LIMIT:,} bytes" in r.json()["error"] and "--max-bytes" in r.json()["error"]
    )
    chunks = (b"x" * 10_000 for _ in range(20))  # no Content-Length: counted as it streams
    r = client.post("/predict", content=chunks)
    assert r.status_code == 413 and f"limit of {LIMIT:,} bytes" in r.json()["error"]
    assert client.post("/predict", content=SEVEN).status_code == 200  # still serving


def _call(app, headers: list[tuple[bytes, bytes]], bodies: list[bytes]) -> tuple[int, int]:
    """``(status, receive calls)`` of one POST /predict sent straight to the ASGI app, body in ``bodies``."""
    sent, calls = [], 0

    async def receive():
        nonlocal calls
        calls += 1
        body = bodies[calls - 1] if calls <= len(bodies) else b""
        return {"type": "http.request", "body": body, "more_body": calls < len(bodies)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "headers": headers}
    scope |= {"http_version": "1.1", "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": ""}
    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), calls


def test_the_limit_is_enforced_before_the_body_is_read(readers):
    app = web.create_app(readers, max_bytes=LIMIT)
    declared = [(b"content-length", str(10 * LIMIT).encode()), (b"content-type", b"image/png")]
    assert _call(app, declared, [b"x" * LIMIT] * 10) == (413, 0)  # refused from the header: nothing read
    streamed = [(b"content-type", b"image/png")]
    assert _call(app, streamed, [b"x" * (LIMIT // 4)] * 100) == (413, 5)  # stops at the chunk that passes it


def test_rejected_flag_follows_the_threshold(readers):
    strict = {"digit": rd.load(readers["digit"].run, reject_below=1.0)}
    r = TestClient(web.create_app(strict)).post("/predict", content=SEVEN).json()
    assert r["rejected"] and r["shown"] == "?" and r["reject_below"] == 1.0


def test_a_missing_kind_and_a_bug_are_json_errors_and_serving_goes_on(readers, monkeypatch):
    client = TestClient(web.create_app({"digit": readers["digit"]}), raise_server_exceptions=False)
    r = client.post("/predict?kind=string", content=SEVEN)
    assert r.status_code == 400 and "--strings RUN" in r.json()["error"]
    monkeypatch.setattr(rd, "read", lambda *a, **k: 1 / 0)
    r = client.post("/predict", content=SEVEN)
    assert r.status_code == 500 and "bug in hwr" in r.json()["error"]
    monkeypatch.undo()
    assert client.post("/predict", content=SEVEN).status_code == 200


def test_a_valid_image_over_the_limit_is_refused_and_the_defaults_hold(readers):
    buf = io.BytesIO()
    Image.effect_noise((200, 200), 80).save(buf, "PNG")  # noise does not compress: about 40 kB
    client = TestClient(web.create_app(readers, max_bytes=len(buf.getvalue()) - 1))
    assert client.post("/predict", content=buf.getvalue()).status_code == 413
    assert web.DEFAULT_MAX_BYTES == 25 * 2**20  # a 48-50 MP phone photo as JPEG
    with pytest.raises(InputError, match="at least one run"):
        web.create_app({})
    with pytest.raises(InputError, match="positive number of bytes"):
        web.create_app(readers, max_bytes=0)
