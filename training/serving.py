"""The MLflow ``pyfunc`` flavour of a packaged RDTF model (models-from-code: MLflow runs this file to build it).

Logged by :func:`training.registry.log_sticker_model` with the diffusers package folder
(``model.pipeline.RDTFPipeline.save_pretrained``) as the artifact ``pipeline`` and the code it needs (``model/``,
``data/``) declared as ``code_paths`` — nothing is pickled. Served with::

    mlflow models serve -m models:/rdtf-dfgn@champion --env-manager local -h 127.0.0.1 -p 5001

``POST /invocations`` with ``{"dataframe_records": [{"prompt": "a cat waving", "steps": 25, "seed": 0}]}`` answers
``{"predictions": [{"sticker": "<base64 GIF>", "format": "gif", ...}]}``. One row per sticker:

================  ========  ===================================================================================
column            type      meaning
================  ========  ===================================================================================
prompt            string    the caption ("" = no text condition)
first_frame       string    optional base64 image (PNG/GIF/WebP/JPEG): the known first frame (I&T→V, image→V)
task              string    ``model.masks.SamplingTask`` value; default ``generate`` (with or without first_frame)
steps             long      DDIM steps (default 50, Table 6); 1..MAX_STEPS
seed              long      noise seed (default 0): same request, same sticker
format            string    gif (default) | webp | png (APNG)
================  ========  ===================================================================================

Output columns: ``sticker`` (base64 bytes of the animation), ``format``, ``num_frames``, ``duration_ms``,
``weights`` (``random`` when the model's pretrained parts are random-init presets). A bad request raises an
``MlflowException`` with ``INVALID_PARAMETER_VALUE`` (HTTP 400 from the scoring server) naming the field.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import warnings

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

MAX_STEPS = 1000  # DDIM steps of one request (the training schedule has 1000 timesteps, Table 6)
MAX_IMAGE_BYTES = 16 * 2**20  # decoded base64 size of first_frame
MAX_IMAGE_PIXELS = 4096 * 4096  # first_frame width x height (decompression bombs are refused before decoding)
FORMATS = ("gif", "webp", "png")
DEVICE_ENV = "RDTF_SERVE_DEVICE"  # torch device of the served model (default cpu)
WHITE = (255, 255, 255)  # the training background (decode_sticker composites alpha onto white)


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _field(row: dict, name: str, default):
    v = row.get(name, default)
    if v is None or (isinstance(v, float) and math.isnan(v)):  # pandas fills absent optional columns with NaN/None
        return default
    return v


def _int_field(row: dict, name: str, default: int, lo: int, hi: int) -> int:
    v = _field(row, name, default)
    try:
        if isinstance(v, bool):
            raise TypeError(v)
        iv = int(v)
        if isinstance(v, float) and iv != v:  # pandas turns an int column with gaps into floats: 25.0 is fine
            raise ValueError(v)
    except (TypeError, ValueError, OverflowError):
        raise _bad(f"{name} must be an integer in [{lo}, {hi}], got {v!r}") from None
    if not lo <= iv <= hi:
        raise _bad(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    return iv


def decode_image(text: str, size: int):
    """base64 image -> (size, size, 3) uint8 on white, aspect kept (the training's frame preprocessing)."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    from data.media import fit_to_square

    if not isinstance(text, str):
        raise _bad(f"first_frame must be a base64 string, got {type(text).__name__}")
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise _bad(f"first_frame is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("first_frame is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise _bad(f"first_frame is {im.width}x{im.height}, more than {MAX_IMAGE_PIXELS} pixels")
            im.load()
            rgba = np.asarray(ImageOps.exif_transpose(im).convert("RGBA"))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise _bad(f"first_frame is not a readable image: {e}") from None
    return fit_to_square(rgba, size, WHITE)


class StickerModel(PythonModel):
    """pyfunc wrapper of ``RDTFPipeline``: a DataFrame of requests -> a DataFrame of base64 stickers."""

    def load_context(self, context) -> None:
        from model.pipeline import RDTFPipeline

        self.pipe = RDTFPipeline.from_pretrained(context.artifacts["pipeline"], device=os.environ.get(DEVICE_ENV, "cpu"))
        self.pipe.set_progress_bar_config(disable=True)

    def predict(self, context, model_input, params=None):
        import pandas as pd

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        if not rows:
            raise _bad("no request rows")
        return pd.DataFrame([self.generate(r) for r in rows])

    def generate(self, row: dict) -> dict:
        from data.export import encode_sticker
        from model.masks import SamplingTask

        unknown = sorted(set(row) - {"prompt", "first_frame", "task", "steps", "seed", "format"})
        if unknown:
            raise _bad(f"unknown request fields {unknown}; allowed: prompt, first_frame, task, steps, seed, format")
        prompt = _field(row, "prompt", "")
        if not isinstance(prompt, str):
            raise _bad(f"prompt must be a string, got {type(prompt).__name__}")
        try:
            task = SamplingTask.parse(_field(row, "task", SamplingTask.GENERATE.value))
        except ValueError as e:
            raise _bad(str(e)) from None
        fmt = str(_field(row, "format", "gif")).lower()
        if fmt not in FORMATS:
            raise _bad(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        steps = _int_field(row, "steps", 50, 1, MAX_STEPS)
        seed = _int_field(row, "seed", 0, 0, 2**63 - 1)
        frame = _field(row, "first_frame", None)
        images = [decode_image(frame, self.pipe.image_size)] if frame not in (None, "") else None
        try:
            res = self.pipe(prompt if task.uses_text else "", images=images, task=task, num_inference_steps=steps,
                            seed=seed, progress=False)
        except ValueError as e:  # wrong frame count for the task, etc.
            raise _bad(str(e)) from None
        data = encode_sticker(res.frames, res.durations_ms, fmt)
        return {"sticker": base64.b64encode(data).decode("ascii"), "format": fmt, "num_frames": len(res.frames),
                "duration_ms": int(res.durations_ms[0]), "weights": self.pipe.weights}


def signature():
    """Input/output schema of :class:`StickerModel` (optional fields are ``required=False``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    inputs = Schema([ColSpec(DataType.string, "prompt"), ColSpec(DataType.string, "first_frame", required=False),
                     ColSpec(DataType.string, "task", required=False), ColSpec(DataType.long, "steps", required=False),
                     ColSpec(DataType.long, "seed", required=False), ColSpec(DataType.string, "format", required=False)])
    outputs = Schema([ColSpec(DataType.string, "sticker"), ColSpec(DataType.string, "format"),
                      ColSpec(DataType.long, "num_frames"), ColSpec(DataType.long, "duration_ms"),
                      ColSpec(DataType.string, "weights")])
    return ModelSignature(inputs=inputs, outputs=outputs)


# the schema is the explicit signature() above, not predict's type hints: MLflow's advice to add them is noise here
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
mlflow.models.set_model(StickerModel())
