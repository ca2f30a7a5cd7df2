// part_d2 web page: upload an image, choose an object (click / box / brush), segment its parts.
// Plain JavaScript, no build step. The server API is described in part_d2/engine/web_app.py.
"use strict";

const $ = (id) => document.getElementById(id);
const OPTION_NAMES = ["topk", "part_score_threshold", "k", "non_overlapping", "crf"];
const state = {
  image: null,          // HTMLImageElement of the upload
  imageId: null,        // server id of the upload
  objects: [],          // [{object_id, name, score, bbox, area, outline, path}]
  selected: null,       // object_id
  box: null,            // [x0, y0, x1, y1] in image pixels
  dragStart: null,
  mask: null,           // offscreen canvas (image size) holding the brushed mask
  maskPainted: false,
  painting: false,
};

function setStatus(text, kind) {
  $("status").textContent = text;
  document.body.dataset.state = kind;
}

async function callApi(url, init) {
  const response = await fetch(url, init);
  let body;
  try { body = await response.json(); } catch (e) { body = {error: `${response.status} ${response.statusText}`}; }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function fail(err) { setStatus(`error: ${err.message}`, "error"); }

async function loadConfig() {
  const cfg = await callApi("/api/config");
  const select = $("part-source");
  for (const source of cfg.part_sources) {
    const opt = document.createElement("option");
    opt.value = source; opt.textContent = source; opt.selected = source === cfg.part_source;
    select.appendChild(opt);
  }
  for (const name of [...OPTION_NAMES, "object_score_threshold"]) {
    const input = $(`opt-${name}`);
    if (input.type === "checkbox") input.checked = Boolean(cfg.options[name]);
    else input.value = cfg.options[name];
  }
  setStatus(`object source: ${cfg.object_source}; upload an image`, "ready");
}

function options() {
  const out = {};
  for (const name of OPTION_NAMES) {
    const input = $(`opt-${name}`);
    out[name] = input.type === "checkbox" ? input.checked : Number(input.value);
  }
  return out;
}

// ---- drawing -------------------------------------------------------------------------------

function objectPath(outline) {
  const path = new Path2D();
  for (const poly of outline) {
    path.moveTo(poly[0], poly[1]);
    for (let i = 2; i < poly.length; i += 2) path.lineTo(poly[i], poly[i + 1]);
    path.closePath();
  }
  return path;
}

function redraw() {
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  if (!state.image) return;
  ctx.drawImage(state.image, 0, 0);
  const lw = Math.max(1, canvas.width / 300);
  for (const obj of state.objects) {
    const chosen = obj.object_id === state.selected;
    ctx.lineWidth = chosen ? 2 * lw : lw;
    ctx.strokeStyle = chosen ? "#ff0" : "rgba(255,255,255,0.8)";
    if (chosen) { ctx.fillStyle = "rgba(255,255,0,0.3)"; ctx.fill(obj.path); }
    ctx.stroke(obj.path);
  }
  if (state.maskPainted) {
    ctx.globalAlpha = 0.45; ctx.drawImage(state.mask, 0, 0); ctx.globalAlpha = 1;
  }
  if (state.box) {
    const [x0, y0, x1, y1] = state.box;
    ctx.lineWidth = 2 * lw; ctx.strokeStyle = "#0ff"; ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
}

function describeSelection() {
  let text = "nothing selected";
  if (state.selected !== null) {
    const obj = state.objects.find((o) => o.object_id === state.selected);
    text = `object ${obj.object_id}${obj.name ? " (" + obj.name + ")" : ""}, score ${obj.score.toFixed(3)}`;
  } else if (state.box) text = `box ${state.box.map((v) => v.toFixed(0)).join(", ")}`;
  else if (state.maskPainted) text = "brushed mask";
  $("selection").textContent = text;
  $("selection").dataset.objectId = state.selected === null ? "" : String(state.selected);
  $("segment").disabled = text === "nothing selected";
}

// ---- pointer input (image pixel coordinates) -------------------------------------------------

function imagePoint(event) {
  const canvas = $("view");
  const rect = canvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * canvas.width / rect.width,
          (event.clientY - rect.top) * canvas.height / rect.height];
}

function mode() { return document.querySelector("input[name=mode]:checked").value; }

function objectAt(x, y) {
  const ctx = $("view").getContext("2d");
  let best = null;
  for (const obj of state.objects) {  // the smallest object under the point wins
    if (ctx.isPointInPath(obj.path, x, y) && (best === null || obj.area < best.area)) best = obj;
  }
  return best;
}

function paint(x, y) {
  const ctx = state.mask.getContext("2d");
  ctx.fillStyle = "#f0f";
  ctx.beginPath(); ctx.arc(x, y, Number($("brush-radius").value), 0, 2 * Math.PI); ctx.fill();
  state.maskPainted = true;
}

function clearUserInput() {
  state.box = null;
  state.maskPainted = false;
  if (state.mask) state.mask.getContext("2d").clearRect(0, 0, state.mask.width, state.mask.height);
}

function onPointerDown(event) {
  if (!state.imageId) return;
  const [x, y] = imagePoint(event);
  const m = mode();
  if (m === "select") {
    const obj = objectAt(x, y);
    state.selected = obj ? obj.object_id : null;
    clearUserInput();
  } else {
    state.selected = null;
    if (m === "box") { state.maskPainted = false; state.box = null; state.dragStart = [x, y]; }
    else { state.box = null; state.painting = true; paint(x, y); }
  }
  redraw(); describeSelection();
}

function onPointerMove(event) {
  const [x, y] = imagePoint(event);
  if (state.dragStart) {
    const [x0, y0] = state.dragStart;
    state.box = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
    redraw();
  } else if (state.painting) { paint(x, y); redraw(); }
}

function onPointerUp() {
  if (state.box && (state.box[2] - state.box[0] < 2 || state.box[3] - state.box[1] < 2)) state.box = null;
  state.dragStart = null; state.painting = false;
  redraw(); describeSelection();
}

// ---- server calls -----------------------------------------------------------------------------

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`${file.name}: the browser cannot show this image`));
    img.src = URL.createObjectURL(file);
  });
}

async function detect() {
  const file = $("image-file").files[0];
  if (!file) return;
  setStatus("detecting objects…", "busy");
  try {
    state.image = await loadImage(file);
    const canvas = $("view");
    canvas.width = state.image.naturalWidth; canvas.height = state.image.naturalHeight;
    state.mask = document.createElement("canvas");
    state.mask.width = canvas.width; state.mask.height = canvas.height;
    state.imageId = null; state.objects = []; state.selected = null; clearUserInput();
    redraw(); describeSelection(); showParts(null);
    const form = new FormData();
    form.append("image", file);
    form.append("vocabulary", $("vocabulary").value);
    form.append("object_score_threshold", $("opt-object_score_threshold").value);
    const body = await callApi("/api/objects", {method: "POST", body: form});
    state.imageId = body.image_id;
    state.objects = body.objects.map((o) => ({...o, path: objectPath(o.outline)}));
    $("object-count").textContent = `(${state.objects.length} detected, ${body.seconds.toFixed(2)} s)`;
    redraw();
    setStatus(`${state.objects.length} objects: click one, or draw a box / brush a mask`, "objects");
  } catch (err) { fail(err); }
}

async function segment() {
  const request = {image_id: state.imageId, part_source: $("part-source").value, options: options()};
  if (state.selected !== null) request.object_id = state.selected;
  else if (state.box) request.box = state.box;
  else if (state.maskPainted) request.mask = state.mask.toDataURL("image/png");
  else return;
  setStatus("segmenting parts…", "busy");
  $("segment").disabled = true;
  try {
    const body = await callApi("/api/parts", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(request)});
    showParts(body);
    setStatus(`${body.result.parts.length} parts`, "parts");
  } catch (err) { fail(err); }
  describeSelection();
}

function showParts(body) {
  const tbody = $("parts").querySelector("tbody");
  tbody.replaceChildren();
  $("overlay").hidden = body === null;
  $("downloads").hidden = body === null;
  $("timing").textContent = "";
  if (body === null) return;
  // the overlay is the image plus a legend panel on the right: show its image part at the canvas's scale
  $("overlay").onload = () => {
    const scale = $("view").getBoundingClientRect().width / $("view").width;
    $("overlay").style.width = `${$("overlay").naturalWidth * scale}px`;
  };
  $("overlay").src = body.overlay_url;
  $("download-overlay").href = body.overlay_url;
  $("download-json").href = body.json_url;
  $("timing").textContent = `(${body.seconds.toFixed(2)} s)`;
  for (const part of body.result.parts) {
    const row = tbody.insertRow();
    row.className = "part";
    // the exact values, for anyone reading the page programmatically (the browser test does)
    row.dataset.objectId = part.object_id;
    row.dataset.name = part.name;
    row.dataset.index = part.index;
    row.dataset.score = String(part.score);
    row.dataset.rle = part.segmentation.counts;
    for (const text of [part.object_id, part.name || `part ${part.index}`, part.index, part.score.toFixed(3)]) {
      row.insertCell().textContent = text;
    }
  }
}

// ---- wiring ------------------------------------------------------------------------------------

$("image-file").addEventListener("change", () => { $("detect").disabled = !$("image-file").files.length; detect(); });
$("detect").addEventListener("click", detect);
$("segment").addEventListener("click", segment);
$("clear").addEventListener("click", () => { clearUserInput(); redraw(); describeSelection(); });
$("view").addEventListener("pointerdown", onPointerDown);
$("view").addEventListener("pointermove", onPointerMove);
window.addEventListener("pointerup", onPointerUp);
loadConfig().catch(fail);
