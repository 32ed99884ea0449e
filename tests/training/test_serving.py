"""The pyfunc model's request handling (no server): validation errors are 400s naming the field; output decodes."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image

from model.pipeline import RDTFPipeline
from tests.helpers import tiny_checkpoint
from training import serving


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = serving.StickerModel()
    m.pipe = RDTFPipeline.from_pretrained(tiny_checkpoint(tmp_path_factory.mktemp("srv") / "run"))
    return m


def _png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_predict_returns_decodable_stickers(model):
    frame = _png(np.full((40, 20, 3), 200, np.uint8))  # any size: fitted to the model's square like training
    out = model.predict(None, pd.DataFrame([{"prompt": "a cat", "steps": 1, "seed": 0, "format": "webp"},
                                            {"prompt": "", "first_frame": frame, "task": "generate_image", "steps": 1.0}]))
    assert list(out["format"]) == ["webp", "gif"] and list(out["weights"]) == ["random", "random"]
    with Image.open(io.BytesIO(base64.b64decode(out["sticker"][0]))) as im:
        assert im.format == "WEBP" and im.n_frames >= 1 and im.size == (model.pipe.image_size,) * 2


@pytest.mark.parametrize("row,match", [
    ({"prompt": "x", "format": "bmp"}, "format must be one of"),
    ({"prompt": "x", "steps": 0}, "steps must be an integer in"),
    ({"prompt": "x", "steps": 2.5}, "steps must be an integer in"),
    ({"prompt": "x", "steps": True}, "steps must be an integer in"),
    ({"prompt": "x", "seed": -1}, "seed must be an integer in"),
    ({"prompt": "x", "task": "dance"}, "unknown task"),
    ({"prompt": "x", "first_frame": "%%%"}, "not valid base64"),
    ({"prompt": "x", "first_frame": base64.b64encode(b"GIF89a junk").decode()}, "not a readable image"),
    ({"prompt": "x", "task": "interpolate", "first_frame": None}, "needs between|interpolate"),
    ({"prompt": "x", "evil": 1}, "unknown request fields"),
    ({"prompt": 3}, "prompt must be a string"),
])
def test_bad_requests_are_invalid_parameter_errors(model, row, match):
    with pytest.raises(MlflowException, match=match) as err:
        model.generate(row)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_decompression_bombs_are_refused_before_decoding(model, monkeypatch):
    monkeypatch.setattr(serving, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(MlflowException, match="more than 100 pixels"):
        model.generate({"prompt": "x", "first_frame": _png(np.zeros((20, 20, 3), np.uint8))})
