"""The page of ``hwr serve`` in a real browser: Debian's Chromium, headless, driven by Playwright against the
``hwr serve`` command in a subprocess. Strokes drawn on the canvas with mouse events are read and the reading,
its confidence and its alternatives show; Undo and Clear take strokes away; a text file and an image over the
size limit show the server's error on the page, and the server goes on reading the next drawing and a good file;
string mode reads a wider canvas. Skipped, saying why, where Chromium or Playwright is missing (``.ci/run``
installs both)."""

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from tiny_runs import SEVEN, serving, shared_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [  # what works headless as root in a container, with no network beyond this machine
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIMIT = 100_000
WAIT_MS = 60_000  # a reading takes well under a second; a loaded CI machine gets room
DONE = "['done', 'error'].includes(document.body.dataset.state)"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (Debian package chromium: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        except sync_api.Error as e:
            pytest.skip(f"Chromium at {CHROMIUM} does not start under Playwright: {str(e).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    digit, string = shared_run(tmp_path_factory, "digit"), shared_run(tmp_path_factory, "string")
    with serving("--run", str(digit), "--strings", str(string), "--max-bytes", str(LIMIT)) as (proc, url, _):
        yield url
        assert proc.poll() is None, "the server stopped during the tests"


@pytest.fixture
def page(browser, server):
    p = browser.new_page(viewport={"width": 1000, "height": 1100})
    p.set_default_timeout(WAIT_MS)
    p.goto(server)
    p.wait_for_function("document.body.dataset.state === 'idle' && document.getElementById('limit').textContent")
    yield p
    p.close()


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Real mouse events: each stroke pressed at its first point, moved through the rest, released; points are
    fractions of the canvas's width and height."""
    box = page.locator("#canvas").bounding_box()
    at = lambda x, y: (box["x"] + x * box["width"], box["y"] + y * box["height"])
    for (x0, y0), *rest in strokes:
        page.mouse.move(*at(x0, y0))
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(*at(x, y), steps=4)
        page.mouse.up()


def ink(page) -> int:
    """How many of the canvas's pixels are dark."""
    return page.evaluate(
        """() => { const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++; return n; }"""
    )


def read_drawing(page) -> str:
    page.click("#read")
    page.wait_for_function(DONE)
    assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#error")
    return page.inner_text("#reading")


SEVEN_STROKES = [[(0.25, 0.2), (0.75, 0.2), (0.4, 0.85)]]


def test_a_drawn_digit_is_read_with_confidence_and_alternatives(page):
    draw(page, SEVEN_STROKES)
    assert ink(page) > 500
    shown = read_drawing(page)
    assert re.fullmatch(r"[0-9?]", shown), shown
    confidence = page.inner_text("#confidence")
    assert re.fullmatch(r"confidence [01]\.\d{3}( \(rejected\))?", confidence)
    rejected = confidence.endswith("(rejected)")  # below the threshold: "?" in place of the digit
    assert (shown == "?") == rejected and page.inner_text("#reject-note").startswith(
        "Rejected" if rejected else "Accepted"
    )
    assert page.locator("#alternatives li").count() == 3
    assert re.search(r"read\s+(\d|\? \(\d\))", page.inner_text("#characters"))
    assert page.is_hidden("#error") and "the drawing: read as a digit" in page.inner_text("#status")


def test_undo_removes_the_last_stroke_and_clear_all(page):
    draw(page, [[(0.5, 0.1), (0.5, 0.9)]])
    one = ink(page)
    draw(page, [[(0.1, 0.5), (0.9, 0.5)]])
    assert ink(page) > one
    page.click("#undo")
    assert ink(page) == one
    page.click("#clear")
    assert ink(page) == 0
    page.click("#read")  # nothing drawn: said on the page, nothing sent
    assert "draw a digit" in page.inner_text("#error")


def test_bad_uploads_show_the_servers_error_and_it_goes_on_serving(page, tmp_path):
    (tmp_path / "notes.txt").write_text("a shopping list, not a picture")
    page.set_input_files("#upload", str(tmp_path / "notes.txt"))
    page.wait_for_function(DONE)
    assert page.is_visible("#error") and "notes.txt: not an image file" in page.inner_text("#error")
    Image.effect_noise((400, 400), 90).convert("RGB").save(tmp_path / "photo.png")  # noise: about 480 kB
    assert (tmp_path / "photo.png").stat().st_size > LIMIT
    page.set_input_files("#upload", str(tmp_path / "photo.png"))
    page.wait_for_function(f"{DONE} && document.getElementById('error').textContent.includes('limit')")
    assert f"over this server's limit of {LIMIT:,} bytes" in page.inner_text("#error")
    draw(page, SEVEN_STROKES)  # the server still reads
    assert re.fullmatch(r"[0-9?]", read_drawing(page)) and page.is_hidden("#error")
    (tmp_path / "seven.png").write_bytes(SEVEN)  # and a good file
    page.set_input_files("#upload", str(tmp_path / "seven.png"))
    page.wait_for_function(f"{DONE} && document.getElementById('status').textContent.includes('seven.png')")
    assert page.evaluate("document.body.dataset.state") == "done" and page.is_hidden("#error")


def test_string_mode_reads_a_wider_canvas(page):
    page.check("#mode-string")
    assert page.evaluate("document.getElementById('canvas').width") == 720
    draw(page, [[(0.15, 0.2), (0.15, 0.8)], [(0.35, 0.2), (0.5, 0.2), (0.35, 0.8), (0.5, 0.8)]])
    shown = read_drawing(page)
    assert re.fullmatch(r"[0-9?]*", shown) and "read as a string" in page.inner_text("#status")
    assert page.is_hidden("#alternatives-box")  # a string has one best reading
