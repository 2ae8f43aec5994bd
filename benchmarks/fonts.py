"""Handwriting-style fonts from Debian packages, where the packages put them: the hands that
``benchmarks/strings_fonts.py`` (digit strings) and ``benchmarks/digit_folder.py`` (an image folder of single
digits) write with.

    apt-get install fonts-dkg-handwriting fonts-humor-sans fonts-breip fonts-rufscript fonts-comic-neue \\
        fonts-femkeklaver
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FONTS", "OUTLINE_FONTS", "installed_fonts"]

FONTS = [  # Debian: fonts-dkg-handwriting, fonts-humor-sans, fonts-breip, fonts-rufscript, fonts-comic-neue, ...
    "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf",
    "/usr/share/fonts/truetype/fifthhorseman/dkgIt.ttf",
    "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",
    "/usr/share/fonts/truetype/breip/Breip.ttf",
    "/usr/share/fonts/truetype/rufscript/Rufscript010.ttf",
    "/usr/share/fonts/opentype/comic-neue/ComicNeue-Regular.otf",
]
# Each digit drawn as a sketched outline (two strokes round a hollow), unlike any handwriting the model has seen:
# reported in a row of its own, never mixed into the single-stroke figure; tests/data/test_photos.py reads it as
# a reader guard (an outline is no ring round a digit).
OUTLINE_FONTS = ["/usr/share/fonts/truetype/femkeklaver/femkeklaver.ttf"]  # fonts-femkeklaver


def installed_fonts(*, outline: bool = False) -> list[str]:
    """The ``FONTS`` present on this machine, and the ``OUTLINE_FONTS`` too with ``outline=True``."""
    return [f for f in [*FONTS, *(OUTLINE_FONTS if outline else [])] if Path(f).is_file()]
