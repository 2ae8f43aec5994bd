"""mnist_style and load_image: real PNG/JPEG files of MNIST digits (large, inverted, on coloured or transparent
backgrounds) come back as the original digit; geometry matches MNIST's recipe; every bad input gets a clear error."""

import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from hwr.data import digits, sources
from hwr.errors import InputError


@pytest.fixture(scope="module")
def mnist_digits():
    ds = sources.load("mnist")
    pick = torch.arange(0, 10_000, 250)  # 40 test digits
    return ds.test_images[pick, 0], ds.test_labels[pick]


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def _com(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    i = torch.arange(x.shape[-1], dtype=torch.float64)
    m = x.sum()
    return float((x.sum(1) * i).sum() / m), float((x.sum(0) * i).sum() / m)


def test_mnist_style_geometry():
    img = torch.zeros(100, 200)
    img[30:40, 50:90] = 1.0  # a 10 x 40 bar, off centre
    out = digits.mnist_style(img)
    assert out.shape == (1, 28, 28) and out.dtype == torch.uint8 and int(out.max()) == 255
    ink = out[0] > 0
    assert int(ink.any(1).sum()) == 5 and int(ink.any(0).sum()) == 20  # longer side 20, aspect 1:4 kept
    cy, cx = _com(out[0])
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert torch.equal(digits.mnist_style(img), out)  # deterministic
    small = torch.zeros(8, 8)
    small[2:6, 3] = 0.5  # upsampling an 8x8 digit also fills the 20 box
    assert int((digits.mnist_style(small)[0] > 0).any(1).sum()) == 20


def test_mnist_style_reproduces_mnist_digits(mnist_digits):
    images, _ = mnist_digits
    corr = [_corr(digits.mnist_style(x.float() / 255), x) for x in images]
    assert float(np.mean(corr)) > 0.95 and min(corr) > 0.8


def test_mnist_style_errors():
    with pytest.raises(ValueError, match="no ink"):
        digits.mnist_style(torch.zeros(28, 28))
    with pytest.raises(ValueError, match="2-D"):
        digits.mnist_style(torch.zeros(1, 28, 28))
    bad = torch.zeros(10, 10)
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        digits.mnist_style(bad)


def _save_styles(folder, x: np.ndarray, k: int) -> list:
    """One MNIST digit as five real files: large grey PNG (light on dark), JPEG (dark on white), RGB PNG and
    JPEG with dark ink on a coloured ground, RGBA PNG with dark strokes on a transparent ground."""
    size = 280 + 40 * k
    a = np.asarray(Image.fromarray(x).resize((size, size), Image.BICUBIC)).astype(np.float32) / 255.0
    paths = []
    p = folder / f"light_on_dark_{k}.png"
    Image.fromarray((a * 255).astype(np.uint8)).save(p)
    paths.append(p)
    p = folder / f"dark_on_white_{k}.jpg"
    Image.fromarray(((1 - a) * 255).astype(np.uint8)).save(p, quality=90)
    paths.append(p)
    bg, fg = np.array([230, 200, 120], np.float32), np.array([20, 30, 90], np.float32)
    rgb = (bg * (1 - a[..., None]) + fg * a[..., None]).astype(np.uint8)
    for ext in ("png", "jpg"):
        p = folder / f"coloured_{k}.{ext}"
        Image.fromarray(rgb).save(p, quality=90) if ext == "jpg" else Image.fromarray(rgb).save(p)
        paths.append(p)
    rgba = np.zeros((*a.shape, 4), np.uint8)
    rgba[..., :3] = 10
    rgba[..., 3] = (a * 255).astype(np.uint8)
    p = folder / f"transparent_{k}.png"
    Image.fromarray(rgba, "RGBA").save(p)
    paths.append(p)
    return paths


def test_load_image_real_files_come_back_as_the_digit(mnist_digits, tmp_path):
    images, _ = mnist_digits
    corr = []
    for k in range(8):
        original = images[k]
        for path in _save_styles(tmp_path, original.numpy(), k):
            ink = digits.load_image(path)
            assert ink.ndim == 2 and ink.dtype == torch.float32 and float(ink.max()) == 1.0
            assert float(ink.min()) == 0.0 and float(ink.median()) < 0.05  # background is 0, ink bright
            corr.append(_corr(digits.mnist_style(ink)[0], original))
            assert corr[-1] > 0.7, path.name  # a one-pixel shift of a thin stroke costs this much
    assert float(np.mean(corr)) > 0.9


def test_load_image_grey_mid_background(tmp_path):
    a = np.full((120, 100), 128, np.uint8)
    a[30:90, 45:55] = 30  # a dark stroke on mid-grey
    Image.fromarray(a).save(tmp_path / "mid.png")
    ink = digits.load_image(tmp_path / "mid.png")
    assert float(ink[60, 50]) == 1.0 and float(ink[5, 5]) == 0.0
    b = 255 - a  # a light stroke on mid-grey
    Image.fromarray(b).save(tmp_path / "mid2.png")
    assert torch.equal(digits.load_image(tmp_path / "mid2.png"), ink)


def test_load_image_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        digits.load_image(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        digits.load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="not a file"):
        digits.load_image(tmp_path)
    for w, h in ((1, 1), (3, 3), (7, 5)):  # too small to hold a digit: refused, not scaled up to a guess
        a = np.full((h, w), 255, np.uint8)
        a[h // 2, :], a[:, w // 2] = 0, 0
        Image.fromarray(a).save(tmp_path / f"tiny{w}.png")
        with pytest.raises(ValueError, match=rf"tiny{w}.png: {w}x{h} pixels is too small to hold a digit"):
            digits.load_image(tmp_path / f"tiny{w}.png")
    (tmp_path / "empty.png").touch()
    with pytest.raises(ValueError, match=r"empty.png: empty file \(0 bytes\)"):
        digits.load_image(tmp_path / "empty.png")
    Image.new("RGB", (200, 150), (240, 240, 235)).save(tmp_path / "blank.png")
    with pytest.raises(ValueError, match="no ink found"):
        digits.load_image(tmp_path / "blank.png")
    noise = np.random.default_rng(0).integers(250, 256, (100, 100)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "paper.png")  # paper texture only
    with pytest.raises(ValueError, match="no ink found"):
        digits.load_image(tmp_path / "paper.png")


def test_load_image_refuses_huge_images_before_decoding(tmp_path):
    small = tmp_path / "small.png"
    Image.new("L", (4, 4)).save(small)
    data = bytearray(small.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", 9000, 6000)  # 54 megapixels in the header; the pixel data stay 4x4
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    huge = tmp_path / "huge.png"
    huge.write_bytes(bytes(data))
    with Image.open(huge) as im:
        assert im.size == (9000, 6000)
    with pytest.raises(ValueError, match="54,000,000 pixels exceeds the 50,000,000-pixel limit for PNG files"):
        digits.load_image(huge)


def _jpeg_declaring(path, w: int, h: int) -> None:
    """A small JPEG whose frame header (SOF0) declares ``w x h``: the pixel data stay those of 16x16."""
    Image.new("L", (16, 16), 200).save(path, quality=90)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(data))


def test_a_phone_photo_of_up_to_178_megapixels_is_read_from_a_drafted_jpeg(tmp_path):
    """A JPEG is decoded at 1/2-1/8 by its decoder, never whole, so a 108-megapixel phone photo (12000x9000) is
    read as the same picture saved small is; other formats stop at 50 megapixels (a 48-50 MP phone photo passes),
    and a JPEG declaring more than Pillow's own bomb limit is refused from its header."""

    def seven(w: int, h: int) -> Image.Image:
        img = Image.new("L", (w, h), 235)
        k = w / 1200
        ImageDraw.Draw(img).line(
            [(450 * k, 250 * k), (750 * k, 250 * k), (560 * k, 700 * k)], fill=30, width=int(40 * k)
        )
        return img

    seven(12000, 9000).save(tmp_path / "big.jpg", quality=85)  # 108 MP, a 1.3 MB file
    seven(1200, 900).save(tmp_path / "small.png")
    big, small = (digits.mnist_style(digits.load_image(tmp_path / f)) for f in ("big.jpg", "small.png"))
    assert _corr(big, small) > 0.95
    _jpeg_declaring(tmp_path / "bomb.jpg", 20000, 10000)  # 200 MP
    with pytest.raises(ValueError, match="too large to decode safely"):
        digits.load_image(tmp_path / "bomb.jpg")


def test_load_image_truncated_file(tmp_path, mnist_digits):
    images, _ = mnist_digits
    path = tmp_path / "d.jpg"
    Image.fromarray(images[0].numpy()).resize((300, 300)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(ValueError, match="cannot decode"):
        digits.load_image(path)


def test_a_damaged_multi_page_file_or_any_decoder_failure_is_an_input_error_naming_the_file(tmp_path, monkeypatch):
    """A multi-page TIFF or an animated GIF cut short raises TypeError or IndexError inside PIL when its pages are
    counted, and a damaged AVIF a RuntimeError when opened: each is the one-line input error naming the file (an
    internal error before, which ``hwr predict`` and ``--skip-bad`` could not get past)."""
    page = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(page).line((30, 8, 30, 52), fill=0, width=6)
    page.save(tmp_path / "pages.tif", save_all=True, append_images=[page.rotate(90)])
    page.save(tmp_path / "anim.gif", save_all=True, append_images=[page.rotate(90)])
    for name in ("pages.tif", "anim.gif"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError, match=rf"cut_{name}: cannot decode the image .*damaged or cut short"):
            digits.load_image(tmp_path / f"cut_{name}")

    def fails(*args, **kwargs):
        raise RuntimeError("Failed to decode frame 0")

    monkeypatch.setattr(digits.Image, "open", fails)
    with pytest.raises(InputError, match=r"pages.tif: cannot decode the image \(RuntimeError: Failed to decode"):
        digits.load_image(tmp_path / "pages.tif")


def test_a_float_image_with_nan_or_infinite_pixels_reads_as_without_them(tmp_path):
    a = np.full((60, 60), 1.0, np.float32)
    a[8:52, 27:33] = 0.0  # a dark stroke on white, 32-bit float (mode F)
    Image.fromarray(a, "F").save(tmp_path / "clean.tif")
    a[0, 0], a[59, 59], a[30, 5] = np.nan, np.inf, -np.inf
    Image.fromarray(a, "F").save(tmp_path / "nan.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a division by NaN on the way
        assert torch.equal(digits.load_image(tmp_path / "nan.tif"), digits.load_image(tmp_path / "clean.tif"))


@pytest.mark.parametrize(("side", "mean"), [(8, 0.65), (10, 0.65), (12, 0.72), (16, 0.8)])
def test_a_thumbnail_reads_as_its_digit(mnist_digits, tmp_path, side, mean):
    """An MNIST digit saved at 8-16 pixels (scikit-learn's digits are 8x8) reads as that digit, not as blank or
    as noise smoothed away: it is scaled up to 28 pixels before it is read (``digits._enlarged``). Read at their
    own size, the 8-12 pixel ones were refused as blank and the 16-pixel ones correlated 0.79 on average (0.82
    now); what a thumbnail lost is lost, so the bar falls with the size."""
    images, _ = mnist_digits
    corr = []
    for k in range(8):
        original = images[k]
        small = Image.fromarray(255 - original.numpy()).resize((side, side), Image.Resampling.BOX)
        small.save(tmp_path / f"{k}.png")
        ink = digits.load_image(tmp_path / f"{k}.png")
        corr.append(_corr(digits.mnist_style(ink)[0], original))
    assert min(corr) > 0.35 and float(np.mean(corr)) > mean, corr


def test_load_image_bytes_equals_load_image_and_names_the_upload(tmp_path, mnist_digits):
    """An upload's bytes give the very ink map its file gives (PNG, JPEG, transparent PNG), and the same errors
    with the upload's name where the path would be."""
    images, _ = mnist_digits
    big = Image.fromarray(255 - images[3].numpy()).resize((200, 200))
    files = {"d.png": (big, {}), "d.jpg": (big.convert("RGB"), {"quality": 85}), "t.png": (big.convert("RGBA"), {})}
    for name, (img, options) in files.items():
        img.save(tmp_path / name, **options)
        data = (tmp_path / name).read_bytes()
        assert torch.equal(digits.load_image_bytes(data, name), digits.load_image(tmp_path / name)), name
    with pytest.raises(ValueError, match=r"^notes\.txt: not an image file"):
        digits.load_image_bytes(b"a shopping list", "notes.txt")
    with pytest.raises(ValueError, match=r"^upload: cannot decode"):
        digits.load_image_bytes((tmp_path / "d.jpg").read_bytes()[:600])
    huge = bytearray((tmp_path / "d.png").read_bytes())
    huge[16:24] = struct.pack(">II", 9000, 6000)  # 54 megapixels in the header
    huge[29:33] = struct.pack(">I", zlib.crc32(bytes(huge[12:29])))
    with pytest.raises(ValueError, match=r"^upload: 9000x6000 = 54,000,000 pixels exceeds"):
        digits.load_image_bytes(bytes(huge))


def test_heic_and_avif_photos_read_as_their_png_and_upright(mnist_digits, tmp_path):
    """A phone's HEIC (pillow-heif) and AVIF (Pillow) photos read as the PNG of the same picture does, and a HEIC
    turned by its EXIF orientation comes back upright, as a JPEG with the same tag does (pillow-heif applies the
    turn when decoding and resets the tag, so the reader's ``exif_transpose`` does not turn it twice)."""
    images, _ = mnist_digits
    a = 1.0 - np.asarray(Image.fromarray(images[3].numpy()).resize((300, 300), Image.BICUBIC)) / 255.0
    bg, fg = np.array([225, 215, 190]), np.array([30, 30, 70])
    rgb = Image.fromarray((bg * a[..., None] + fg * (1 - a[..., None])).astype(np.uint8))
    rgb.save(tmp_path / "d.png")
    want = digits.mnist_style(digits.load_image(tmp_path / "d.png"))[0]
    for name, fmt in (("d.heic", "HEIF"), ("d.HEIC", "HEIF"), ("d.avif", "AVIF")):
        rgb.save(tmp_path / name, fmt, quality=90)
        assert _corr(digits.mnist_style(digits.load_image(tmp_path / name))[0], want) > 0.97, name
    turned = Image.Exif()
    turned[0x0112] = 6  # the picture stored a quarter-turn from upright
    stored = rgb.transpose(Image.Transpose.ROTATE_90)
    for name, fmt in (("t.heic", "HEIF"), ("t.jpg", "JPEG")):
        stored.save(tmp_path / name, fmt, quality=95, exif=turned.tobytes())
        assert _corr(digits.mnist_style(digits.load_image(tmp_path / name))[0], want) > 0.95, name


def test_a_broken_heic_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "x.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic not really")
    with pytest.raises(ValueError, match=r"x\.HEIC: not an image file PIL can read .*HEIC"):
        digits.load_image(tmp_path / "x.HEIC")


def test_the_conversion_version_follows_the_decoders_and_filters(monkeypatch):
    """A Pillow, pillow-heif, NumPy or SciPy upgrade may decode a file another way (or read one an older version
    refused): the version caches of converted images are keyed by changes with each of them."""
    import PIL
    import scipy

    before = digits.conversion_version()
    assert digits.conversion_version() == before and len(before) == 16
    for module, attr in ((PIL, "__version__"), (digits.pillow_heif, "__version__"), (scipy, "__version__")):
        with monkeypatch.context() as m:
            m.setattr(module, attr, "0.0.0-other")
            assert digits.conversion_version() != before, module
    assert digits.conversion_version() == before


def test_a_photo_with_a_corrupt_exif_block_is_read_as_stored(tmp_path):
    """An EXIF block an app wrote badly (here the compression tag as text) makes Pillow's ``exif_transpose``
    raise; the pixels are still the photo, read as stored instead of stopping ``hwr predict`` as a bug."""

    from PIL import ImageOps

    img = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(img).line((30, 8, 30, 52), fill=0, width=6)
    entries = struct.pack(">HHI4s", 0x0103, 2, 4, b"cam\0") + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    exif = b"Exif\0\0MM\0*" + struct.pack(">IH", 8, 2) + entries + struct.pack(">I", 0)
    img.save(tmp_path / "exif.jpg", exif=exif)
    img.save(tmp_path / "plain.jpg")
    with pytest.raises(struct.error):
        ImageOps.exif_transpose(Image.open(tmp_path / "exif.jpg"))  # what Pillow does with it
    assert torch.equal(digits.load_image(tmp_path / "exif.jpg"), digits.load_image(tmp_path / "plain.jpg"))


def test_a_malformed_header_is_bad_input_naming_the_file(tmp_path):
    (tmp_path / "bad.pgm").write_bytes(b"P5\n2x 2\n255\n\0\0\0\0")  # Pillow raises a plain ValueError on it
    with pytest.raises(InputError, match=r"bad.pgm: cannot decode the image"):
        digits.load_image(tmp_path / "bad.pgm")
    with pytest.raises(InputError, match=r"upload.pgm: cannot decode the image"):
        digits.load_image_bytes((tmp_path / "bad.pgm").read_bytes(), "upload.pgm")


def test_a_huge_flat_picture_is_averaged_down_in_8_bits_before_it_becomes_float(tmp_path):
    """A 6,300 x 6,300 PNG compresses to kilobytes but is 40 MP: read as RGBA floats at full size it took about
    2 GB; averaged down first it stays within a few hundred MB and reads the same digit as a picture drawn at
    the working size."""
    import tracemalloc

    big = Image.new("L", (6300, 6300), 255)
    ImageDraw.Draw(big).line((3150, 800, 3150, 5500), fill=0, width=500)
    big.save(tmp_path / "big.png")
    small = big.resize((1575, 1575), Image.Resampling.BOX)
    small.save(tmp_path / "small.png")
    tracemalloc.start()
    try:
        out = digits.load_image(tmp_path / "big.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 * 2**20, peak / 2**20  # numpy's arrays are traced; the full-size float path needed ~2 GB
    assert max(out.shape) <= digits.WORK_SIDE and float(out.max()) == 1.0
    a, b = digits.mnist_style(out), digits.mnist_style(digits.load_image(tmp_path / "small.png"))
    assert float((a.float() - b.float()).abs().mean()) < 2.0  # the same "1", to a grey level or two


def test_a_multi_page_file_reads_its_first_page_and_a_blank_one_says_so(tmp_path):
    """A TIFF of several pages is read as its first page; where that page is blank the message says which page
    was read and how to read another, instead of only "write the digit darker"."""
    blank = Image.new("L", (60, 60), 255)
    digit = blank.copy()
    ImageDraw.Draw(digit).line((30, 8, 30, 52), fill=0, width=6)
    digit.save(tmp_path / "first.tif", save_all=True, append_images=[blank])
    digit.save(tmp_path / "one.tif")
    assert torch.equal(digits.load_image(tmp_path / "first.tif"), digits.load_image(tmp_path / "one.tif"))
    blank.save(tmp_path / "cover.tif", save_all=True, append_images=[digit, digit])
    with pytest.raises(InputError, match=r"cover.tif: no ink found.*the first of its 3 pages was read"):
        digits.load_image(tmp_path / "cover.tif")
    blank.save(tmp_path / "blank.png")
    with pytest.raises(InputError, match=r"no ink found.*crop closer$"):  # one page: no page note
        digits.load_image(tmp_path / "blank.png")
