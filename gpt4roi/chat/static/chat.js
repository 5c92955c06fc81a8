// The region chat page: draw numbered boxes on the image, refer to them as <regionK>, stream the answers.
// Boxes are kept in image pixel coordinates (what the model receives); the canvas only scales them for display.
"use strict";

const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
                 "#808000", "#000075", "#469990", "#800000"];
const MAX_DISPLAY = { width: 720, height: 540 };
const MAX_ZOOM = 2;     // small pictures are shown up to twice their size
const HANDLE = 7;      // px (display) around a corner that grabs it
const MIN_BOX = 4;     // px (display) a drag must cover to make a box
const CLICK = 3;       // px (display) of movement still counted as a click

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const state = {
  image: null,          // HTMLImageElement of the server's (upright) copy
  width: 0, height: 0,  // image pixels
  fit: 1,               // display px per image px
  boxes: [],            // [[x1, y1, x2, y2]] image pixels; index + 1 is the region number
  committed: 0,         // boxes 1..committed are part of the conversation and fixed
  selected: 0,          // selected box number, 0 for none
  busy: false,
};
let drag = null;        // {mode: draw|move|resize|click, number, start, origin, corner, moved}

const colour = (number) => PALETTE[(number - 1) % PALETTE.length];

// ---------------------------------------------------------------------------------------------- errors ---
function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

// ---------------------------------------------------------------------------------------------- image ---
function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the image could not be displayed"));
    image.src = url;
  });
}

async function applyState(data, { reloadImage = false } = {}) {
  $("model-name").textContent = data.model ? `model: ${data.model}` : "";
  if (data.has_image && (reloadImage || !state.image)) {
    state.image = await loadImage(data.image_url);
  } else if (!data.has_image) {
    state.image = null;
  }
  state.width = data.width;
  state.height = data.height;
  state.boxes = data.boxes.map((box) => box.slice());
  state.committed = data.committed;
  state.selected = 0;
  layout();
  renderTranscript(data.history);
  renderBoxList();
  draw();
}

function layout() {
  const dpr = window.devicePixelRatio || 1;
  const width = state.image ? state.width : MAX_DISPLAY.width;
  const height = state.image ? state.height : 360;
  state.fit = Math.min(MAX_DISPLAY.width / width, MAX_DISPLAY.height / height, MAX_ZOOM);
  const cssWidth = Math.round(width * state.fit);
  const cssHeight = Math.round(height * state.fit);
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  $("placeholder").hidden = Boolean(state.image);
}

// ---------------------------------------------------------------------------------------------- drawing ---
function draw() {
  const cssWidth = canvas.width / (window.devicePixelRatio || 1);
  const cssHeight = canvas.height / (window.devicePixelRatio || 1);
  ctx.clearRect(0, 0, cssWidth, cssHeight);
  if (!state.image) return;
  ctx.drawImage(state.image, 0, 0, cssWidth, cssHeight);
  const boxes = state.boxes.slice();
  if (drag && drag.mode === "draw" && drag.box) boxes.push(drag.box);
  boxes.forEach((box, index) => drawBox(box, index + 1));
}

function drawBox(box, number) {
  const [x1, y1, x2, y2] = box.map((v) => v * state.fit);
  const fixed = number <= state.committed;
  ctx.save();
  ctx.lineWidth = number === state.selected ? 4 : 2.5;
  ctx.strokeStyle = colour(number);
  ctx.setLineDash(fixed ? [] : [7, 4]);
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  ctx.setLineDash([]);
  const label = String(number);
  ctx.font = "bold 14px system-ui, sans-serif";
  const labelWidth = ctx.measureText(label).width + 10;
  const labelY = y1 >= 20 ? y1 - 20 : y1;
  ctx.fillStyle = colour(number);
  ctx.fillRect(x1, labelY, labelWidth, 20);
  ctx.fillStyle = "#fff";
  ctx.fillText(label, x1 + 5, labelY + 15);
  if (!fixed) {
    ctx.fillStyle = colour(number);
    for (const [cx, cy] of corners([x1, y1, x2, y2])) ctx.fillRect(cx - 3, cy - 3, 6, 6);
  }
  ctx.restore();
}

function corners([x1, y1, x2, y2]) {
  return [[x1, y1], [x2, y1], [x1, y2], [x2, y2]];
}

// ------------------------------------------------------------------------------------------ mouse work ---
function pointer(event) {  // display coordinates inside the canvas
  const rect = canvas.getBoundingClientRect();
  const cssWidth = canvas.width / (window.devicePixelRatio || 1);
  const scale = cssWidth / rect.width;
  return [(event.clientX - rect.left) * scale, (event.clientY - rect.top) * scale];
}

function toImage([x, y]) {
  return [Math.min(Math.max(x / state.fit, 0), state.width), Math.min(Math.max(y / state.fit, 0), state.height)];
}

function hit([x, y]) {  // topmost box under the pointer: {number, corner} (corner -1 for the inside)
  for (let index = state.boxes.length - 1; index >= 0; index -= 1) {
    const shown = state.boxes[index].map((v) => v * state.fit);
    const number = index + 1;
    if (number > state.committed) {
      const corner = corners(shown).findIndex(([cx, cy]) => Math.abs(cx - x) <= HANDLE && Math.abs(cy - y) <= HANDLE);
      if (corner >= 0) return { number, corner };
    }
    if (x >= shown[0] && x <= shown[2] && y >= shown[1] && y <= shown[3]) return { number, corner: -1 };
  }
  return null;
}

function normalise([x1, y1, x2, y2]) {
  return [Math.round(Math.min(x1, x2)), Math.round(Math.min(y1, y2)), Math.round(Math.max(x1, x2)),
          Math.round(Math.max(y1, y2))];
}

canvas.addEventListener("pointerdown", (event) => {
  if (!state.image || state.busy || event.button !== 0) return;
  canvas.focus();
  canvas.setPointerCapture(event.pointerId);
  const at = pointer(event);
  const found = hit(at);
  if (!found) {
    drag = { mode: "draw", start: at, box: null };
  } else if (found.number <= state.committed) {
    drag = { mode: "click", number: found.number, start: at };
  } else {
    drag = { mode: found.corner >= 0 ? "resize" : "move", number: found.number, corner: found.corner, start: at,
             origin: state.boxes[found.number - 1].slice(), moved: false };
  }
});

canvas.addEventListener("pointermove", (event) => {
  if (!state.image) return;
  const at = pointer(event);
  if (!drag) {
    const found = hit(at);
    canvas.style.cursor = !found ? "crosshair" : found.number <= state.committed ? "pointer"
      : found.corner === 0 || found.corner === 3 ? "nwse-resize" : found.corner >= 0 ? "nesw-resize" : "move";
    return;
  }
  const moved = Math.hypot(at[0] - drag.start[0], at[1] - drag.start[1]) > CLICK;
  if (drag.mode === "draw") {
    drag.box = normalise([...toImage(drag.start), ...toImage(at)]);
  } else if (drag.mode === "move" && (moved || drag.moved)) {
    drag.moved = true;
    const [x1, y1, x2, y2] = drag.origin;
    let dx = (at[0] - drag.start[0]) / state.fit;
    let dy = (at[1] - drag.start[1]) / state.fit;
    dx = Math.min(Math.max(dx, -x1), state.width - x2);
    dy = Math.min(Math.max(dy, -y1), state.height - y2);
    state.boxes[drag.number - 1] = normalise([x1 + dx, y1 + dy, x2 + dx, y2 + dy]);
  } else if (drag.mode === "resize") {
    drag.moved = true;
    const box = drag.origin.slice();
    const [px, py] = toImage(at);
    if (drag.corner === 0 || drag.corner === 2) box[0] = px; else box[2] = px;
    if (drag.corner === 0 || drag.corner === 1) box[1] = py; else box[3] = py;
    state.boxes[drag.number - 1] = normalise(box);
  }
  draw();
});

canvas.addEventListener("pointerup", (event) => {
  if (!drag) return;
  const at = pointer(event);
  const current = drag;
  drag = null;
  if (current.mode === "draw") {
    const box = normalise([...toImage(current.start), ...toImage(at)]);
    if ((box[2] - box[0]) * state.fit >= MIN_BOX && (box[3] - box[1]) * state.fit >= MIN_BOX) {
      state.boxes.push(box);
      state.selected = state.boxes.length;
    }
  } else if (current.mode === "click" || (current.mode === "move" && !current.moved)) {
    state.selected = current.number;
    insertReference(current.number);
  } else {
    const box = state.boxes[current.number - 1];
    if (box[2] - box[0] < 1 || box[3] - box[1] < 1) state.boxes[current.number - 1] = current.origin;
    state.selected = current.number;
  }
  renderBoxList();
  draw();
});

canvas.addEventListener("keydown", (event) => {
  if ((event.key === "Delete" || event.key === "Backspace") && state.selected) {
    event.preventDefault();
    deleteBox(state.selected);
  }
});

function deleteBox(number) {
  if (number <= state.committed || state.busy) {
    showError(`box ${number} is part of the conversation and cannot be deleted; clear the conversation to start over`);
    return;
  }
  state.boxes.splice(number - 1, 1);
  // The draft keeps pointing at the same boxes: drop references to the deleted one, shift the later ones.
  const message = $("message");
  message.value = message.value.replace(/<region(\d+)>/g, (text, k) => {
    const value = Number(k);
    return value === number ? "" : value > number ? `<region${value - 1}>` : text;
  });
  state.selected = 0;
  renderBoxList();
  draw();
}

function insertReference(number) {
  const message = $("message");
  const token = `<region${number}>`;
  const start = message.selectionStart ?? message.value.length;
  const end = message.selectionEnd ?? message.value.length;
  const before = message.value.slice(0, start);
  const spacer = before && !/\s$/.test(before) ? " " : "";
  message.value = before + spacer + token + message.value.slice(end);
  const caret = start + spacer.length + token.length;
  message.focus();
  message.setSelectionRange(caret, caret);
}

// --------------------------------------------------------------------------------------------- panels ---
function renderBoxList() {
  const list = $("box-list");
  list.replaceChildren();
  state.boxes.forEach((box, index) => {
    const number = index + 1;
    const item = document.createElement("li");
    item.dataset.number = String(number);
    if (number === state.selected) item.classList.add("selected");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(number);
    const label = document.createElement("span");
    label.textContent = `region${number} [${box.join(", ")}]${number <= state.committed ? " · fixed" : ""}`;
    const insert = document.createElement("button");
    insert.type = "button";
    insert.textContent = "insert";
    insert.title = `insert <region${number}> into the message`;
    insert.addEventListener("click", () => insertReference(number));
    item.append(swatch, label, insert);
    if (number > state.committed) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.title = `delete box ${number}`;
      remove.addEventListener("click", () => deleteBox(number));
      item.append(remove);
    }
    list.append(item);
  });
}

function withReferences(node, text, pattern) {  // text with region names as coloured chips (no HTML parsing)
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    node.append(text.slice(last, match.index));
    const chip = document.createElement("span");
    chip.className = "ref";
    chip.style.background = colour(Number(match[1]));
    chip.textContent = match[0];
    node.append(chip);
    last = match.index + match[0].length;
  }
  node.append(text.slice(last));
}

function addTurn(role, text) {
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  withReferences(turn, text, role === "human" ? /<region(\d+)>/g : /\bregion(\d+)\b/g);
  $("transcript").append(turn);
  turn.scrollIntoView({ block: "end" });
  return turn;
}

function renderTranscript(history) {
  $("transcript").replaceChildren();
  for (const round of history) {
    addTurn("human", round.question);
    addTurn("gpt", round.answer);
  }
}

function setBusy(busy) {
  state.busy = busy;
  for (const id of ["send", "clear", "examples"]) $(id).disabled = busy;
}

// ---------------------------------------------------------------------------------------------- asking ---
async function* serverEvents(response) {  // parse a text/event-stream body into {event, data}
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function ask(event) {
  event.preventDefault();
  if (state.busy) return;
  const message = $("message").value.trim();
  showError("");
  if (!state.image) { showError("no image yet: upload an image or pick an example first"); return; }
  if (!message) { showError("the message is empty"); return; }
  setBusy(true);
  let answer = null;
  try {
    const response = await api("/api/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ message, boxes: state.boxes }),
    });
    const question = addTurn("human", message);
    answer = addTurn("gpt", "");
    answer.classList.add("streaming");
    let text = "";
    for await (const { event: kind, data } of serverEvents(response)) {
      if (kind === "chunk") {
        text += data;
        answer.replaceChildren();
        withReferences(answer, text, /\bregion(\d+)\b/g);
      } else if (kind === "done") {
        $("message").value = "";
        answer.classList.remove("streaming");
        state.committed = data.committed;
        state.boxes = data.boxes.map((box) => box.slice());
        renderBoxList();
        draw();
        answer = null;
      } else if (kind === "error") {
        question.remove();
        throw new Error(data);
      }
    }
    if (answer) throw new Error("the answer stopped before it was complete");
  } catch (error) {
    if (answer) answer.remove();
    showError(error.message);
  } finally {
    setBusy(false);
  }
}

// ------------------------------------------------------------------------------------- image sources ---
async function upload() {
  const file = $("upload").files[0];
  if (!file) return;
  showError("");
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await api("/api/image", { method: "POST", body: form });
    await applyState(await response.json(), { reloadImage: true });
  } catch (error) {
    showError(error.message);
  } finally {
    $("upload").value = "";
  }
}

async function pickExample() {
  const name = $("examples").value;
  if (!name) return;
  showError("");
  try {
    const response = await api("/api/example", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    await applyState(await response.json(), { reloadImage: true });
  } catch (error) {
    showError(error.message);
  } finally {
    $("examples").value = "";
  }
}

async function clearConversation() {
  showError("");
  try {
    await applyState(await (await api("/api/clear", { method: "POST" })).json());
  } catch (error) {
    showError(error.message);
  }
}

async function start() {
  $("upload").addEventListener("change", upload);
  $("examples").addEventListener("change", pickExample);
  $("clear").addEventListener("click", clearConversation);
  $("ask").addEventListener("submit", ask);
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) ask(event);
  });
  try {
    const { examples } = await (await api("/api/examples")).json();
    for (const name of examples) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      $("examples").append(option);
    }
    await applyState(await (await api("/api/state")).json(), { reloadImage: true });
  } catch (error) {
    showError(error.message);
  }
  document.body.dataset.ready = "true";
}

start();
