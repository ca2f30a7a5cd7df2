"""The interactive web page of ``tools/web_demo.py``: a Flask app over :class:`PartSegmenter`.

One page (``web_static/index.html``: plain HTML, JavaScript and a canvas) and a JSON API:

- ``GET /api/config``: part sources, option defaults (``cfg.SEGMENTER.*``) and the object source.
- ``POST /api/objects`` (multipart ``image`` [+ ``vocabulary``: comma-separated names]): the image
  is kept in memory under an ``image_id``; the detected objects come back with score, name, box,
  RLE mask and outline polygons.
- ``POST /api/parts`` (JSON ``image_id`` + one of ``object_id`` / ``box`` [x0, y0, x1, y1] /
  ``mask`` (PNG data URL, painted pixels = object) + ``part_source`` + ``options``): the parts of
  that one object, as :func:`part_d2.engine.segmenter.to_json`, and a ``result_id``.
- ``GET /api/results/<result_id>/overlay.png`` and ``.../parts.json``: the downloads.

Every call of the segmenter API is in :class:`SegmenterBackend`. A bad request (unreadable image,
unknown id, bad option) is answered with status 400/404 and ``{"error": "<one line>"}``.
"""
import base64
import binascii
import collections
import io
import os
import re
import threading
import time
import uuid
from typing import Dict, List, Optional

import cv2
import numpy as np
from flask import Flask, Response, jsonify, request, send_from_directory
from PIL import Image, UnidentifiedImageError

from part_d2.data.image_io import pil_has_alpha
from part_d2.engine import segmenter as api
from part_d2.engine.config_checks import config_value
from part_d2.structures.masks import mask_to_rle
from part_d2.utils.errors import ConfigError, ImageReadError, PartDatasetError, clean_error_message

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web_static")
PART_SOURCES = ("auto", "object_aware", "proposals", "grouping")  # the values of SEGMENTER.PART_SOURCE
# Page option (a keyword of ``segment_parts``) -> (the config key holding its default, type).
PART_OPTIONS = {
    "topk": ("SEGMENTER.TOPK", int),
    "part_score_threshold": ("SEGMENTER.PART_SCORE_THRESHOLD", float),
    "non_overlapping": ("SEGMENTER.NON_OVERLAPPING", bool),
    "crf": ("SEGMENTER.CRF", bool),
    "k": ("PART_DISTILLATION.PIXEL_GROUPING.NUM_CLUSTERS", int),
}
MAX_IMAGES = 16  # uploaded images kept in memory (oldest dropped first)
MAX_RESULTS = 32  # results kept for download


class RequestError(ValueError):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class SegmenterBackend:
    """The one place where the web page calls the segmenter API.

    Args:
        cfg: a part_d2 config with ``SEGMENTER.*`` (not modified). One segmenter per part source is
            built on first use, from ``cfg`` with ``SEGMENTER.PART_SOURCE`` set to that source.
        random_weights: allow empty weights (randomly initialised models, for tests).
        segmenter: the configured part source's segmenter, built by the caller (e.g. with its own
            object model), or None to build it from ``cfg``.
    """

    def __init__(self, cfg, random_weights: bool = False, segmenter=None):
        self.cfg = cfg
        self.random_weights = random_weights
        self.default_source = cfg.SEGMENTER.PART_SOURCE
        self._segmenters: Dict[str, object] = {} if segmenter is None else {self.default_source: segmenter}

    def segmenter(self, part_source: Optional[str] = None):
        source = part_source or self.default_source
        if source not in PART_SOURCES:
            raise RequestError(f"unknown part source {source!r}; one of {', '.join(PART_SOURCES)}")
        if source not in self._segmenters:
            cfg = self.cfg.clone()
            cfg.defrost()
            cfg.SEGMENTER.PART_SOURCE = source
            cfg.freeze()
            self._segmenters[source] = api.PartSegmenter(cfg, random_weights=self.random_weights)
        return self._segmenters[source]

    def option_defaults(self) -> Dict:
        """The page's options (and the object score threshold) as configured."""
        out = {name: typ(config_value(self.cfg, key)) for name, (key, typ) in PART_OPTIONS.items()}
        return {**out, "object_score_threshold": float(self.cfg.SEGMENTER.OBJECT_SCORE_THRESHOLD)}

    def detect(self, image: np.ndarray, vocabulary: Optional[List[str]], object_score_threshold: float) -> List:
        """(H, W, 3|4) uint8 -> the detected objects (``SegObject``, parts empty)."""
        return self.segmenter().detect_objects(image, vocabulary=vocabulary,
                                               object_score_threshold=object_score_threshold)

    def user_object(self, image: np.ndarray, mask: Optional[np.ndarray] = None, box: Optional[List[float]] = None):
        """One object from a (H, W) bool mask or an [x0, y0, x1, y1] box."""
        objs = self.segmenter().objects_from(image, masks=None if mask is None else mask[None],
                                             boxes=None if box is None else [box])
        if not objs:
            raise RequestError("the box holds no pixel of the image")
        return objs[0]

    def segment(self, image: np.ndarray, obj, part_source: str, options: Dict):
        """Parts of one object -> (result json as ``to_json``, (H, W, 3) uint8 overlay)."""
        res = self.segmenter(part_source).segment_parts(image, [obj], **options)
        h, w = image.shape[:2]
        return api.to_json(res, "", (h, w)), api.draw(image[..., :3], res)


def read_upload(data: bytes, name: str) -> np.ndarray:
    """Uploaded image bytes -> (H, W, 3) uint8 RGB, or (H, W, 4) RGBA when it has an alpha channel."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise RequestError(f"{name}: not a readable image ({clean_error_message(str(e)) or type(e).__name__})")
    return np.asarray(img.convert("RGBA" if pil_has_alpha(img) else "RGB")).copy()


def read_mask_data_url(url: str, height: int, width: int) -> np.ndarray:
    """A PNG data URL painted by the page -> (H, W) bool mask (alpha or any colour channel > 127)."""
    if not isinstance(url, str) or not url.startswith("data:image/png;base64,"):
        raise RequestError("mask: expected a PNG data URL")
    try:
        img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1], validate=True)))
        arr = np.asarray(img.convert("RGBA"))
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
        raise RequestError("mask: not a readable PNG")
    if arr.shape[:2] != (height, width):
        raise RequestError(f"mask: size {arr.shape[1]}x{arr.shape[0]} differs from the image's {width}x{height}")
    mask = (arr > 127).any(axis=2) if arr[..., 3].min() == 255 else arr[..., 3] > 127
    if not mask.any():
        raise RequestError("mask: nothing painted")
    return mask


def outline(mask: np.ndarray) -> List[List[float]]:
    """(H, W) bool -> outer contours as flat [x0, y0, x1, y1, ...] polygons through the boundary
    pixels' centres; a contour of fewer than 3 points (a 1-pixel-thin piece) becomes the square
    around its pixels, so that every piece can be clicked."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in contours:
        pts = c.reshape(-1, 2).astype(float) + 0.5
        if len(pts) < 3:
            (x0, y0), (x1, y1) = pts.min(axis=0) - 0.5, pts.max(axis=0) + 0.5
            pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        polygons.append(pts.reshape(-1).tolist())
    return polygons


def object_summary(obj) -> Dict:
    """One ``SegObject`` as the page needs it (json-serialisable)."""
    return {"object_id": int(obj.object_id), "name": obj.name, "score": float(obj.score),
            "bbox": [float(v) for v in obj.box], "area": int(obj.mask.sum()),
            "segmentation": mask_to_rle(obj.mask), "outline": outline(obj.mask)}


def parse_options(body: Dict) -> Dict:
    """The page's ``options`` -> keyword arguments of ``segment_parts`` (unknown names refused;
    the segmenter checks the ranges and fills in the defaults of those not given)."""
    given = body.get("options") or {}
    if not isinstance(given, dict):
        raise RequestError("options: expected an object")
    unknown = sorted(set(given) - set(PART_OPTIONS))
    if unknown:
        raise RequestError(f"options: unknown {', '.join(unknown)}; known: {', '.join(PART_OPTIONS)}")
    out = {}
    for name, value in given.items():
        typ = PART_OPTIONS[name][1]
        try:
            out[name] = bool(value) if typ is bool else typ(value)
        except (TypeError, ValueError):
            raise RequestError(f"options: {name}={value!r} is not a {typ.__name__}")
    return out


class _LRU(collections.OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value):
        self[key] = value
        while len(self) > self.size:
            self.popitem(last=False)


def create_app(backend: SegmenterBackend) -> Flask:
    """The Flask app of the page; ``backend`` runs one inference at a time."""
    app = Flask(__name__, static_folder=STATIC_DIR, static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024
    images, results = _LRU(MAX_IMAGES), _LRU(MAX_RESULTS)
    model_lock = threading.Lock()  # one inference at a time (the models are shared)
    store_lock = threading.Lock()  # the uploads and results kept in memory

    @app.errorhandler(RequestError)
    def _bad_request(e):
        return jsonify(error=str(e)), e.status

    @app.errorhandler(413)
    def _too_large(e):
        return jsonify(error="upload larger than 64 MB"), 413

    def _user_error(e):
        return jsonify(error=" ".join(clean_error_message(str(e)).split())), 400

    for err in (ConfigError, ImageReadError, PartDatasetError):
        app.register_error_handler(err, _user_error)

    @app.get("/")
    def index():
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/api/config")
    def config():
        return jsonify(part_sources=list(PART_SOURCES), part_source=backend.default_source,
                       options=backend.option_defaults(), object_source=backend.cfg.SEGMENTER.OBJECT_SOURCE)

    @app.post("/api/objects")
    def objects():
        upload = request.files.get("image")
        if upload is None:
            raise RequestError("no image uploaded (form field 'image')")
        name = os.path.basename(upload.filename or "upload")
        image = read_upload(upload.read(), name)
        vocabulary = [v.strip() for v in request.form.get("vocabulary", "").split(",") if v.strip()] or None
        threshold = request.form.get("object_score_threshold", "")
        try:
            threshold = float(threshold) if threshold else backend.option_defaults()["object_score_threshold"]
        except ValueError:
            raise RequestError(f"object_score_threshold={threshold!r} is not a number")
        start = time.perf_counter()
        with model_lock:
            objs = backend.detect(image, vocabulary, threshold)
        image_id = uuid.uuid4().hex
        with store_lock:
            images.put(image_id, {"image": image, "file_name": name, "objects": objs})
        return jsonify(image_id=image_id, file_name=name, height=image.shape[0], width=image.shape[1],
                       objects=[object_summary(o) for o in objs], seconds=time.perf_counter() - start)

    @app.post("/api/parts")
    def parts():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise RequestError("expected a JSON object")
        options = parse_options(body)
        with store_lock:
            entry = images.get(body.get("image_id"))
        if entry is None:
            raise RequestError("unknown image_id (upload the image again)", 404)
        image = entry["image"]
        h, w = image.shape[:2]
        start = time.perf_counter()
        with model_lock:
            if body.get("object_id") is not None:
                ids = {o.object_id: o for o in entry["objects"]}
                if body["object_id"] not in ids:
                    raise RequestError(f"unknown object_id {body['object_id']!r}")
                obj = ids[body["object_id"]]
            elif body.get("mask") is not None:
                obj = backend.user_object(image, mask=read_mask_data_url(body["mask"], h, w))
            elif body.get("box") is not None:
                box = body["box"]
                if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
                        and box[2] > box[0] and box[3] > box[1]):
                    raise RequestError("box: expected [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
                obj = backend.user_object(image, box=[float(v) for v in box])
            else:
                raise RequestError("choose an object: object_id, box or mask")
            result, overlay = backend.segment(image, obj, body.get("part_source"), options)
        result["file_name"] = entry["file_name"]
        buf = io.BytesIO()
        Image.fromarray(overlay).save(buf, format="PNG")
        result_id = uuid.uuid4().hex
        stem = re.sub(r"[^\w.-]", "_", os.path.splitext(entry["file_name"])[0], flags=re.ASCII) or "image"
        with store_lock:
            results.put(result_id, {"json": result, "overlay": buf.getvalue(), "stem": stem})
        return jsonify(result_id=result_id, result=result, options=options, seconds=time.perf_counter() - start,
                       overlay_url=f"/api/results/{result_id}/overlay.png",
                       json_url=f"/api/results/{result_id}/parts.json")

    def _result(result_id):
        with store_lock:
            entry = results.get(result_id)
        if entry is None:
            raise RequestError("unknown result_id", 404)
        return entry

    @app.get("/api/results/<result_id>/overlay.png")
    def overlay_png(result_id):
        entry = _result(result_id)
        return Response(entry["overlay"], mimetype="image/png", headers={
            "Content-Disposition": f'attachment; filename="{entry["stem"]}_parts.png"'})

    @app.get("/api/results/<result_id>/parts.json")
    def parts_json(result_id):
        entry = _result(result_id)
        return Response(jsonify(entry["json"]).get_data(), mimetype="application/json", headers={
            "Content-Disposition": f'attachment; filename="{entry["stem"]}_parts.json"'})

    return app
