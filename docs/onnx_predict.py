"""Read a digit from a PNG with a model from `hwr export --format onnx`, by onnxruntime alone (no torch, no hwr).
Usage: python onnx_predict.py model.onnx digit.png   (prints the class and its probability)"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession(sys.argv[1])
classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
image = np.asarray(Image.open(sys.argv[2]).convert("L").resize((28, 28), Image.LANCZOS), dtype=np.uint8)
if image.mean() > 127:  # dark ink on light paper: invert to MNIST's light ink on black
    image = 255 - image
logits = session.run(None, {"images": image[None, None]})[0][0]  # uint8 (1, 1, 28, 28) -> (classes,)
p = np.exp(logits - logits.max())
print(classes[int(p.argmax())], f"{p.max() / p.sum():.3f}")
