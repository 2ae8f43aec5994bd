"""``hwr serve``: a local web page and JSON API that read a drawn or uploaded digit or string.

``reader`` turns an image file's bytes into a reading with a run loaded once (no HTTP); ``app`` is the Starlette
app over it (``POST /predict``, ``GET /health``, the page in ``static/``). ``app`` needs the ``serve`` extra
(``pip install 'hwr[serve]'``: Starlette, uvicorn, python-multipart), so it is imported on its own:
``from hwr.serve import app``.
"""

from hwr.serve import reader
from hwr.serve.reader import DIGIT, STRING, Calibration, Reader, calibration, load, read

__all__ = ["DIGIT", "STRING", "Calibration", "Reader", "calibration", "load", "read", "reader"]
