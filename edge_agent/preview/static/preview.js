// The edge preview page: one card per camera, fed by Server-Sent Events from /api/events. No build step, no
// dependencies. Each event carries every camera's state; a camera's frame and activation images come only when
// they changed, together with the boxes of that very frame ("shown"), so the overlay always matches its frame.
"use strict";

const BOX_COLOUR = "#00ff00";
const BOX_LINE = 3;
const HISTORY = 120; // latency points kept per camera
const CHARTED = { head: "#3498db", uplink_round_trip: "#e67e22", end_to_end: "#2ecc71" };
const cards = new Map();

function card(id) {
  let entry = cards.get(id);
  if (entry) return entry;
  const node = document.getElementById("camera-card").content.firstElementChild.cloneNode(true);
  node.dataset.camera = id;
  node.querySelector(".camera-id").textContent = id;
  document.getElementById("cameras").appendChild(node);
  entry = { node, history: [], lastSequence: null, drawing: 0 };
  cards.set(id, entry);
  return entry;
}

function text(node, selector, value) {
  node.querySelector(selector).textContent = value;
}

// Draw the frame and its boxes, in the frame's own pixels (the canvas is the frame's size; CSS scales it).
function drawFrame(entry, imageUrl, shown) {
  const token = ++entry.drawing;
  const image = new Image();
  image.onload = () => {
    if (token !== entry.drawing) return; // a newer frame arrived while this one decoded
    const canvas = entry.node.querySelector(".frame-canvas");
    canvas.width = shown.width;
    canvas.height = shown.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0, shown.width, shown.height);
    ctx.lineWidth = BOX_LINE;
    ctx.strokeStyle = BOX_COLOUR;
    ctx.font = "bold 14px 'DejaVu Sans', sans-serif";
    for (const [x1, y1, x2, y2, score] of shown.boxes) {
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const label = score.toFixed(2);
      const width = ctx.measureText(label).width + 8;
      ctx.fillStyle = BOX_COLOUR;
      ctx.fillRect(x1 - BOX_LINE / 2, y1 - 19, width, 18);
      ctx.fillStyle = "#000";
      ctx.fillText(label, x1 + 3, y1 - 5);
    }
    // what was drawn, for anyone checking the overlay against the agent's JSON lines
    canvas.dataset.sequence = String(shown.sequence);
    canvas.dataset.boxes = JSON.stringify(shown.boxes);
    canvas.dataset.framesDrawn = String(Number(canvas.dataset.framesDrawn || 0) + 1);
    const faces = shown.boxes.length === 1 ? "1 face" : `${shown.boxes.length} faces`;
    text(entry.node, ".frame-caption", `frame ${shown.frame_index} (sequence ${shown.sequence}), ` +
      `${shown.width}×${shown.height}, ${faces}`);
  };
  image.src = imageUrl;
}

function showWire(entry, activationUrl, shown) {
  entry.node.querySelector(".activation").src = activationUrl;
  const wire = shown.wire;
  const kib = (wire.bytes / 1024).toFixed(0);
  text(entry.node, ".wire-caption", `What crossed the wire for this frame: a ${wire.shape.join("×")} ${wire.dtype} ` +
    `tensor (${kib} KiB), noise included. Shown: each cell's energy, RMS over its ${wire.shape[0]} channels. ` +
    "No pixels leave the site.");
}

function drawLatency(entry) {
  const canvas = entry.node.querySelector(".latency-chart");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const points = entry.history;
  if (points.length === 0) return;
  let top = 1;
  for (const point of points) for (const stage in CHARTED) top = Math.max(top, point[stage] || 0);
  top *= 1.1;
  const left = 44, bottom = height - 16, plotWidth = width - left - 8;
  ctx.font = "11px 'DejaVu Sans', sans-serif";
  ctx.fillStyle = "#9aa0a6";
  ctx.strokeStyle = "#2c3038";
  ctx.lineWidth = 1;
  for (const fraction of [0, 0.5, 1]) {
    const y = bottom - fraction * (bottom - 8);
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(width - 8, y); ctx.stroke();
    ctx.fillText(`${(fraction * top).toFixed(0)} ms`, 2, y + 4);
  }
  ctx.fillText(`last ${points.length} frames`, left, height - 3);
  for (const [stage, colour] of Object.entries(CHARTED)) {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((point, i) => {
      const x = left + (points.length === 1 ? plotWidth : (i / (points.length - 1)) * plotWidth);
      const y = bottom - ((point[stage] || 0) / top) * (bottom - 8);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function showLatency(entry, latency) {
  const legend = entry.node.querySelector(".latency-legend");
  legend.replaceChildren(...Object.entries(latency).map(([stage, ms]) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = CHARTED[stage] || "transparent";
    item.append(swatch, `${stage} ${ms.toFixed(1)} ms`);
    return item;
  }));
}

function update(camera, now) {
  const entry = card(camera.id);
  const node = entry.node;
  node.dataset.status = camera.status;
  text(node, ".badge", camera.status);
  text(node, ".detail", camera.status_detail);
  text(node, ".fps", camera.fps.toFixed(1));
  text(node, ".answered", camera.answered);
  text(node, ".dropped", camera.dropped.keep_latest);
  text(node, ".lost", camera.dropped.uplink);
  text(node, ".reconnects", `${camera.reconnects.source} / ${camera.reconnects.uplink}`);
  text(node, ".uplink", camera.uplink === "down" && camera.uplink_error ? `down: ${camera.uplink_error}` : camera.uplink);
  text(node, ".age", camera.frame ? `${Math.max(0, now - camera.frame.capture_time).toFixed(1)} s ago` : "–");
  if (camera.image && camera.shown) drawFrame(entry, camera.image, camera.shown);
  if (camera.activation && camera.shown) showWire(entry, camera.activation, camera.shown);
  if (camera.frame && camera.latency_ms && camera.frame.sequence !== entry.lastSequence) {
    entry.lastSequence = camera.frame.sequence;
    entry.history.push(camera.latency_ms);
    if (entry.history.length > HISTORY) entry.history.shift();
    showLatency(entry, camera.latency_ms);
    drawLatency(entry);
  }
}

const connection = document.getElementById("connection");
const events = new EventSource("/api/events");
events.onmessage = (message) => {
  const snapshot = JSON.parse(message.data);
  connection.dataset.state = "live";
  connection.textContent = `live, ${snapshot.cameras.length} camera(s), updated ` +
    new Date(snapshot.time * 1000).toLocaleTimeString();
  snapshot.cameras.forEach((camera) => update(camera, snapshot.time));
};
events.onerror = () => {
  connection.dataset.state = "lost";
  connection.textContent = "connection to the agent lost; retrying…";
};
