"""The interactive web page (tools/web_demo.py, part_d2/engine/web_app.py).

The endpoints are checked with Flask's test client against :class:`PartSegmenter` run directly on
the same image; the browser test serves the page, drives Debian's headless Chromium through
chromedriver (tests/webdriver_client.py) like a user (upload, click an object, segment) and checks
that the parts the page shows are the API's. Objects come from a stand-in detector that finds the
synthetic image's objects (a tiny model with random weights finds only specks); parts from pixel
grouping of the tiny model's backbone features.
"""
import base64
import io
import json
import os
import threading
import time

import cv2
import flask
import numpy as np
import pytest
import torch
from detectron2.structures import Instances
from PIL import Image
from tool_loader import load_tool
from webdriver_client import ELEMENT, Browser, browser_missing, free_port
from werkzeug.serving import make_server

from part_d2.data.synthetic.library import load_library
from part_d2.data.synthetic.render import render_image
from part_d2.engine import segmenter as api
from part_d2.engine.setup import load_config
from part_d2.engine.web_app import SegmenterBackend, create_app
from part_d2.structures.masks import mask_to_rle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/synthetic/cascade_mask_rcnn_R_tiny_agnostic.yaml")
# Objects from the "model" source (the stand-in below), parts by pixel grouping of the tiny
# model's backbone features (3 clusters, no CRF: fast).
OPTS = ["MODEL.DEVICE", "cpu", "SEGMENTER.OBJECT_SOURCE", "model", "SEGMENTER.PART_SOURCE", "grouping",
        "SEGMENTER.OBJECT_SCORE_THRESHOLD", "0.0", "SEGMENTER.PART_SCORE_THRESHOLD", "0.0", "SEGMENTER.CRF", "False",
        "PART_DISTILLATION.PIXEL_GROUPING.NUM_CLUSTERS", "3", "PART_DISTILLATION.PIXEL_GROUPING.KMEANS_N_INIT", "2",
        "PART_DISTILLATION.PIXEL_GROUPING.IMAGE_SIZE", "128", "PART_DISTILLATION.PIXEL_GROUPING.METRIC", "l2",
        # the "model" source's class names come from the training set: the mini one is quick to generate
        "DATASETS.TRAIN", "('synthetic_parts_mini_train_agnostic',)", "DATASETS.TEST", "()"]
SEGMENT_OPTIONS = {"topk": 3, "part_score_threshold": 0.0, "non_overlapping": True, "crf": False, "k": 3}


class SyntheticObjects:
    """Stand-in object model (the Detic adapter's contract): the rendered image's true objects."""

    def __init__(self, masks, names):
        self.masks, self.class_names = np.stack(masks), list(names)

    def __call__(self, image_bgr):
        assert image_bgr.shape[:2] == self.masks.shape[1:]
        inst = Instances(self.masks.shape[1:])
        inst.pred_masks = torch.from_numpy(self.masks)
        inst.scores = torch.linspace(0.9, 0.6, len(self.masks))
        inst.pred_classes = torch.arange(len(self.masks))
        return inst


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 128-px synthetic image with 2-3 objects (PNG file) and its true object masks and names."""
    lib = load_library()
    image, labels, objects = render_image(np.random.default_rng(5), lib, lib.classes[0], lib.classes, 128, 1.0)
    assert len(objects) >= 2
    path = str(tmp_path_factory.mktemp("web") / "objects.png")
    Image.fromarray(image).save(path)
    names = {c.id: c.name for c in lib.classes}
    return path, [np.isin(labels, [p.label for p in o.parts]) for o in objects], [names[o.class_id] for o in objects]


@pytest.fixture(scope="module")
def backend(scene):
    cfg = load_config(CONFIG, OPTS)
    cfg.freeze()
    torch.manual_seed(0)
    seg = api.PartSegmenter(cfg, object_model=SyntheticObjects(*scene[1:]), random_weights=True)
    return SegmenterBackend(cfg, random_weights=True, segmenter=seg)


@pytest.fixture(scope="module")
def reference(backend):
    """The API itself."""
    return backend.segmenter()


@pytest.fixture(scope="module")
def client(backend):
    return create_app(backend).test_client()


@pytest.fixture(scope="module")
def image_file(scene):
    return scene[0]


def _rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _upload(client, path):
    with open(path, "rb") as f:
        return client.post("/api/objects", data={"image": (f, os.path.basename(path))},
                           content_type="multipart/form-data")


def _expected(reference, image, obj):
    res = reference.segment_parts(image, [obj], **SEGMENT_OPTIONS)
    return api.to_json(res, "objects.png", image.shape[:2])


def _same_parts(shown, expected):
    """Parts as the page / endpoint gives them == the API's (names, indices, RLE masks, scores to 1e-6)."""
    assert len(shown) == len(expected["parts"]) > 0
    for s, e in zip(shown, expected["parts"]):
        assert (s["object_id"], s["name"], s["index"]) == (e["object_id"], e["name"], e["index"])
        assert s["segmentation"]["counts"] == e["segmentation"]["counts"]
        assert s["score"] == pytest.approx(e["score"], abs=1e-6)


def test_config_endpoint_gives_the_configured_defaults(client):
    body = client.get("/api/config").get_json()
    assert body["part_source"] == "grouping" and "object_aware" in body["part_sources"]
    assert body["object_source"] == "model"
    assert body["options"] == {"topk": 10, "part_score_threshold": 0.0, "non_overlapping": False, "crf": False, "k": 3,
                               "object_score_threshold": 0.0}
    page = client.get("/").get_data(as_text=True)
    assert 'id="view"' in page and "/static/app.js" in page
    assert client.get("/static/app.js").status_code == 200


def test_objects_and_parts_endpoints_equal_the_api(client, reference, image_file):
    image = _rgb(image_file)
    body = _upload(client, image_file).get_json()
    assert (body["height"], body["width"]) == image.shape[:2]
    objs = reference.detect_objects(image)
    assert len(body["objects"]) == len(objs) >= 2
    for shown, obj in zip(body["objects"], objs):
        assert shown["object_id"] == obj.object_id and shown["segmentation"] == mask_to_rle(obj.mask)
        assert shown["score"] == pytest.approx(obj.score, abs=1e-6) and shown["outline"]
        assert shown["name"] == obj.name != ""

    chosen = objs[1]
    r = client.post("/api/parts", json={"image_id": body["image_id"], "object_id": chosen.object_id,
                                        "options": SEGMENT_OPTIONS})
    assert r.status_code == 200, r.get_json()
    result = r.get_json()
    expected = _expected(reference, image, chosen)
    _same_parts(result["result"]["parts"], expected)
    assert result["result"]["objects"][0]["segmentation"] == mask_to_rle(chosen.mask)

    download = client.get(result["json_url"])
    assert download.headers["Content-Disposition"] == 'attachment; filename="objects_parts.json"'

    assert json.loads(download.get_data()) == result["result"]
    overlay = np.asarray(Image.open(io.BytesIO(client.get(result["overlay_url"]).get_data())))
    res = reference.segment_parts(image, [chosen], **SEGMENT_OPTIONS)
    np.testing.assert_array_equal(overlay, api.draw(image, res))


def test_user_box_and_brushed_mask(client, reference, image_file):
    image = _rgb(image_file)
    image_id = _upload(client, image_file).get_json()["image_id"]
    box = [20.0, 30.0, 90.0, 100.0]
    r = client.post("/api/parts", json={"image_id": image_id, "box": box, "options": SEGMENT_OPTIONS})
    assert r.status_code == 200, r.get_json()
    expected = _expected(reference, image, reference.objects_from(image, boxes=[box])[0])
    _same_parts(r.get_json()["result"]["parts"], expected)

    mask = np.zeros(image.shape[:2], bool)
    cv2.circle(mask.view(np.uint8), (64, 60), 25, 1, -1)
    painted = np.zeros((*mask.shape, 4), np.uint8)
    painted[mask] = (255, 0, 255, 255)  # what the page's brush canvas holds
    buf = io.BytesIO()
    Image.fromarray(painted).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = client.post("/api/parts", json={"image_id": image_id, "mask": url, "options": SEGMENT_OPTIONS})
    assert r.status_code == 200, r.get_json()
    result = r.get_json()["result"]
    assert result["objects"][0]["segmentation"] == mask_to_rle(mask)
    _same_parts(result["parts"], _expected(reference, image, reference.objects_from(image, masks=[mask])[0]))


def test_bad_requests_get_one_line_errors(client, image_file):
    r = client.post("/api/objects", data={"image": (io.BytesIO(b"not an image"), "x.jpg")},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["error"].startswith("x.jpg: not a readable image")
    assert client.post("/api/objects").get_json()["error"] == "no image uploaded (form field 'image')"
    r = client.post("/api/parts", json={"image_id": "nope", "object_id": 0})
    assert r.status_code == 404 and "upload the image again" in r.get_json()["error"]
    image_id = _upload(client, image_file).get_json()["image_id"]
    for body, message in [
        ({"object_id": 99}, "unknown object_id 99"),
        ({"box": [5, 5, 5, 9]}, "box: expected [x0, y0, x1, y1]"),
        ({"mask": "data:image/png;base64,AAAA"}, "mask: not a readable PNG"),
        ({}, "choose an object"),
        ({"object_id": 0, "options": {"topk": -1}}, "topk=-1: must be an integer >= 1"),
        ({"object_id": 0, "options": {"kk": 3}}, "options: unknown kk"),
        ({"object_id": 0, "part_source": "magic"}, "unknown part source 'magic'"),
    ]:
        r = client.post("/api/parts", json={"image_id": image_id, **body})
        assert r.status_code == 400 and r.get_json()["error"].startswith(message), (body, r.get_json())
        assert "\n" not in r.get_json()["error"]
    assert client.get("/api/results/nope/overlay.png").status_code == 404


def test_tool_serves_the_page_and_refuses_empty_weights(monkeypatch, capsys, image_file):
    """``tools/web_demo.py`` builds the app from the config and runs it on --host/--port (Flask's
    server is replaced by a recorder); without weights and --random-weights: one error line."""
    web_demo = load_tool("web_demo")
    served = {}
    monkeypatch.setattr(flask.Flask, "run", lambda app, **kw: served.update(app=app, **kw))
    web_demo.main(["--config-file", CONFIG, "--port", "8765", "--random-weights", *OPTS, "SEED", "0"])
    assert (served["host"], served["port"]) == ("127.0.0.1", 8765)
    client = served["app"].test_client()
    assert client.get("/api/config").get_json()["part_source"] == "grouping"
    body = _upload(client, image_file).get_json()
    assert body["height"] == 128 and "objects" in body  # the tiny random model's own detections

    with pytest.raises(SystemExit) as e:
        web_demo.main(["--config-file", CONFIG, "--port", "8765"])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: MODEL.WEIGHTS is empty")


@pytest.mark.skipif(bool(browser_missing()), reason=browser_missing())
def test_page_in_headless_chromium_shows_the_api_parts(backend, reference, image_file):
    """As a user: upload, click an object, segment; the parts table equals the API's output (then
    the same for a dragged box).
    PART_D2_SCREENSHOT=path saves a screenshot of the page (README's docs/images/web_demo.png)."""
    server = make_server("127.0.0.1", free_port(), create_app(backend), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Browser() as browser:
            _drive_page(browser, f"http://127.0.0.1:{server.server_port}/", reference, image_file)
    finally:
        server.shutdown()
        thread.join(10)


def _drive_page(browser, url, reference, image_file):
    image = _rgb(image_file)
    objs = reference.detect_objects(image)
    browser.get(url)
    browser.wait_for("return document.body.dataset.state === 'ready'", 30)
    for name, value in SEGMENT_OPTIONS.items():  # the user sets the options
        browser.script("const e = document.getElementById('opt-' + arguments[0]);"
                       "if (e.type === 'checkbox') e.checked = arguments[1]; else e.value = arguments[1];", name, value)
    browser.send_keys(browser.find("#image-file"), image_file)
    state = browser.wait_for("const s = document.body.dataset.state; return s === 'objects' || s === 'error' ? s : '';")
    assert state == "objects", browser.script("return document.getElementById('status').textContent")
    assert browser.script("return state.objects.length") == len(objs)

    # click the pixel deepest inside an object; the page selects the smallest object there
    depth = [cv2.distanceTransform(np.pad(o.mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1] for o in objs]
    target = int(np.argmax([d.max() for d in depth]))
    y, x = np.unravel_index(np.argmax(depth[target]), image.shape[:2])
    expected_id = min((o for o in objs if o.mask[y, x]), key=lambda o: o.mask.sum()).object_id
    canvas = browser.find("#view")
    scale = browser.script("return arguments[0].getBoundingClientRect().width / arguments[0].width", {ELEMENT: canvas})
    browser.click_at(canvas, (x + 0.5) * scale, (y + 0.5) * scale)
    assert browser.script("return document.getElementById('selection').dataset.objectId") == str(expected_id)

    start = time.perf_counter()
    shown = _segment_in_page(browser)
    seconds = time.perf_counter() - start
    chosen = next(o for o in objs if o.object_id == expected_id)
    _same_parts(shown, _expected(reference, image, chosen))
    browser.wait_for("const i = document.getElementById('overlay'); return i.complete && i.naturalWidth > 0", 30)
    print(f"page: {len(objs)} objects, object {expected_id} -> {len(shown)} parts in {seconds:.2f} s (click to table)")
    if os.environ.get("PART_D2_SCREENSHOT"):
        browser.script("window.scrollTo(0, 0)")
        shot = Image.open(io.BytesIO(browser.screenshot())).convert("RGB")
        shot.quantize(128).save(os.environ["PART_D2_SCREENSHOT"], optimize=True)  # a small PNG for the README

    # a box dragged on the canvas: the page's box (image pixels) gives the API's parts
    browser.click(browser.find("input[name=mode][value=box]"))
    browser.drag(canvas, [(20 * scale, 30 * scale), (50 * scale, 60 * scale), (90 * scale, 100 * scale)])
    box = browser.script("return state.box")
    assert box == pytest.approx([20, 30, 90, 100], abs=1.0)
    expected = _expected(reference, image, reference.objects_from(image, boxes=[box])[0])
    _same_parts(_segment_in_page(browser), expected)


def _segment_in_page(browser):
    """Press "Segment parts"; the parts the page then shows (from its table's data attributes)."""
    browser.click(browser.find("#segment"))
    state = browser.wait_for("const s = document.body.dataset.state; return s === 'parts' || s === 'error' ? s : '';")
    assert state == "parts", browser.script("return document.getElementById('status').textContent")
    rows = browser.script("return [...document.querySelectorAll('#parts tr.part')].map(r => ({...r.dataset}))")
    return [{"object_id": int(r["objectId"]), "name": r["name"], "index": int(r["index"]), "score": float(r["score"]),
             "segmentation": {"counts": r["rle"]}} for r in rows]
