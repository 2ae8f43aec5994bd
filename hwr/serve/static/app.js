// hwr serve's page: draw on the canvas (pointer events: mouse, pen or touch) or pick a file, POST it to
// /predict, show the reading. Plain JavaScript, no build step. The page's state is in <body data-state>:
// "idle", "busy", "done" or "error".
"use strict";

const SIZES = { digit: [280, 280, 18], string: [720, 200, 14] }; // canvas width, height, pen width
const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
let strokes = []; // each stroke: a list of [x, y] canvas points
let current = null; // the stroke being drawn
let kind = "digit";
let runs = {}; // kind -> {run, reject_below, threshold_from, temperature} (GET /health)

function setState(state) {
  document.body.dataset.state = state;
  for (const id of ["read", "undo", "clear", "upload"]) $(id).disabled = state === "busy";
}

function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#000";
  ctx.fillStyle = "#000";
  ctx.lineWidth = SIZES[kind][2];
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const s of strokes) {
    if (s.length === 1) { // a dot
      ctx.beginPath();
      ctx.arc(s[0][0], s[0][1], ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.beginPath();
    ctx.moveTo(s[0][0], s[0][1]);
    for (const [x, y] of s.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
}

function point(e) { // the pointer's position in canvas pixels (the canvas may be shown scaled)
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
}

canvas.addEventListener("pointerdown", (e) => {
  if (e.button !== 0) return;
  canvas.setPointerCapture(e.pointerId);
  current = [point(e)];
  strokes.push(current);
  redraw();
});
canvas.addEventListener("pointermove", (e) => {
  if (!current) return;
  current.push(point(e));
  redraw();
});
for (const type of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(type, () => { current = null; });
}

function setKind(k) {
  kind = k;
  const [w, h] = SIZES[k];
  canvas.width = w;
  canvas.height = h;
  strokes = [];
  redraw();
}

$("undo").addEventListener("click", () => { strokes.pop(); redraw(); });
$("clear").addEventListener("click", () => {
  strokes = [];
  redraw();
  clearResult("Nothing read yet.");
  setState("idle");
});
for (const radio of document.querySelectorAll("input[name=kind]")) {
  radio.addEventListener("change", () => { if (radio.checked) setKind(radio.value); });
}

function clearResult(status) {
  $("error").hidden = true;
  $("error").textContent = "";
  $("reading-box").hidden = true;
  $("status").textContent = status;
}

function showError(message) {
  $("reading-box").hidden = true;
  $("status").textContent = "";
  $("error").textContent = message;
  $("error").hidden = false;
  setState("error");
}

function cell(tag, text, cls) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (cls) el.className = cls;
  return el;
}

function showReading(r, source, ms) {
  const reading = $("reading");
  reading.replaceChildren();
  const charsRow = $("chars-row"), confRow = $("conf-row");
  charsRow.replaceChildren(cell("th", "read"));
  confRow.replaceChildren(cell("th", "confidence"));
  for (const c of r.characters) {
    const span = cell("span", c.rejected ? "?" : c.char, c.rejected ? "rejected" : "");
    if (c.rejected) span.title = `read as ${c.char} (${c.confidence.toFixed(2)}), below the threshold`;
    reading.append(span);
    charsRow.append(cell("td", c.rejected ? `? (${c.char})` : c.char, c.rejected ? "rejected" : ""));
    confRow.append(cell("td", c.confidence.toFixed(3), c.rejected ? "rejected" : ""));
  }
  if (!r.characters.length) reading.append(cell("span", "?", "rejected"));
  $("characters").hidden = !r.characters.length;
  $("confidence").textContent = `confidence ${r.confidence.toFixed(3)}` + (r.rejected ? " (rejected)" : "");
  const alts = $("alternatives");
  alts.replaceChildren(...(r.alternatives || []).map(([c, p]) => cell("li", `${c}  ${p.toFixed(3)}`)));
  $("alternatives-box").hidden = !r.alternatives;
  const threshold = r.reject_below.toFixed(2);
  $("reject-note").textContent = r.rejected
    ? `Rejected: the confidence is below the reject threshold ${threshold} ("?" marks what is below it); `
      + "a person should check it."
    : `Accepted: the confidence is at or above the reject threshold ${threshold}.`;
  const run = runs[r.kind];
  $("model-note").textContent = run
    ? `Model ${run.run}; threshold from ${run.threshold_from}; temperature ${r.temperature.toFixed(2)}.`
    : "";
  $("error").hidden = true;
  $("reading-box").hidden = false;
  $("status").textContent = `${source}: read as a ${r.kind} in ${ms} ms`;
  setState("done");
}

async function send(blob, name, source) {
  clearResult("Reading...");
  setState("busy");
  const form = new FormData();
  form.append("image", blob, name);
  const t0 = performance.now();
  let response, body;
  try {
    response = await fetch(`/predict?kind=${encodeURIComponent(kind)}`, { method: "POST", body: form });
  } catch (err) {
    showError(`could not reach the server (${err.message}); is hwr serve still running?`);
    return;
  }
  try {
    body = await response.json();
  } catch (err) {
    showError(`the server answered ${response.status} without a reading`);
    return;
  }
  if (!response.ok) {
    showError(body.error || `the server answered ${response.status}`);
    return;
  }
  showReading(body, source, Math.round(performance.now() - t0));
}

$("read").addEventListener("click", () => {
  if (!strokes.length) {
    showError("draw a digit (or a string) on the canvas first, or pick an image file");
    return;
  }
  setState("busy"); // at once: toBlob answers later
  canvas.toBlob((blob) => send(blob, "drawing.png", "the drawing"), "image/png");
});

$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (!file) return;
  $("upload").value = ""; // the same file can be picked again
  send(file, file.name, file.name);
});

async function init() {
  setKind(kind);
  setState("idle");
  try {
    const h = await (await fetch("/health")).json();
    runs = h.runs;
    for (const k of ["digit", "string"]) {
      const radio = $(`mode-${k}`);
      radio.disabled = !h.kinds.includes(k);
      radio.checked = k === h.default_kind;
    }
    if (h.default_kind !== kind) setKind(h.default_kind);
    const missing = ["digit", "string"].filter((k) => !h.kinds.includes(k));
    $("mode-note").textContent = missing.length ? `(no ${missing[0]} model loaded)` : "";
    $("limit").textContent = `largest upload ${(h.max_bytes / 2 ** 20).toFixed(1)} MiB`;
  } catch (err) {
    showError(`could not reach the server (${err.message})`);
  }
}

init();
