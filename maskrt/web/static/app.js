// The maskrt live view: plain JavaScript, no build step, nothing loaded from elsewhere.
// Live runs: one Server-Sent Events stream (/api/events) for figures and faces, one MJPEG
// stream per tile. A finished run (maskrt view): the same page from the JSON endpoints, with
// filters and the face gallery. Every text goes in through textContent, never as markup.
"use strict";

const view = { mode: null, status: "connecting", ended: false, tiles: {}, faces: 0,
               states: 0, lastFace: 0, summary: null };
window.maskrtView = view;  // what the browser test reads

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return digits === undefined ? String(value) : value.toFixed(digits);
  return String(value);
}

function setStatus(text, cls) {
  view.status = text;
  const badge = $("status");
  badge.textContent = text;
  badge.className = "badge " + (cls || text);
}

function enc(id) { return encodeURIComponent(id); }

const STATS = [["fps", "fps", 1], ["scored", "scored"], ["dropped", "drops"],
               ["failed", "failures"], ["latency", "latency ms"], ["reconnects", "reconnects"],
               ["read", "read"], ["in_flight", "in flight"]];

function makeTile(source) {
  const img = el("img", { alt: source.id, "data-role": "picture" });
  img.src = (view.mode === "live" ? "/stream.mjpg?source=" : "/frame.jpg?source=") + enc(source.id);
  img.onerror = () => { img.hidden = true; };
  img.onload = () => { img.hidden = false; };
  const stats = el("dl", { class: "stats" });
  const cells = {};
  for (const [key, name] of STATS) {
    cells[key] = el("dd", { "data-stat": key, text: "–" });
    stats.appendChild(el("div", {}, el("dt", { text: name }), cells[key]));
  }
  const state = el("span", { class: "badge", "data-role": "state", text: "–" });
  const error = el("div", { class: "error", "data-role": "error" });
  const node = el("article", { class: "tile", "data-source": source.id },
    el("header", {}, el("span", { class: "name", title: source.id, text: source.id }), state),
    el("div", { class: "picture" }, img), stats, error);
  $("tiles").appendChild(node);
  return { node, cells, state, error, img };
}

function renderSources(sources) {
  for (const source of sources) {
    const tile = view.tiles[source.id] || (view.tiles[source.id] = makeTile(source));
    const lat = source.latency_ms || {};
    const values = { ...source, latency: lat.p50 !== undefined ? lat.p50 : lat };
    for (const [key, , digits] of STATS) tile.cells[key].textContent = fmt(values[key], digits);
    tile.state.textContent = source.state || "–";
    tile.state.className = "badge " + (source.state || "");
    tile.node.dataset.state = source.state || "";
    const reasons = Object.keys(source.reasons || {});
    tile.error.textContent = source.last_error || (source.failed || source.dropped ? reasons[0] || "" : "");
  }
}

function row(table, key, value, cls) {
  const tr = el("tr", {}, el("td", { text: key }), el("td", { class: cls || "", text: value }));
  tr.dataset.key = key;
  table.appendChild(tr);
}

function renderSummary(data) {
  view.summary = data;
  const s = data.summary || {};
  const counts = $("counts");
  counts.replaceChildren();
  for (const [k, v] of Object.entries(s.counts || {})) row(counts, k, fmt(v), "n");
  for (const [k, v] of Object.entries(s.labels || {})) row(counts, k, fmt(v), "n lbl-" + k);
  row(counts, "people without mask", fmt(data.people_without_mask), "n lbl-without_mask");
  const run = $("run");
  run.replaceChildren();
  const lat = s.latency_ms || {};
  row(run, "elapsed s", fmt(s.elapsed_s, 1), "n");
  row(run, "throughput fps", fmt(s.throughput_fps, 1), "n");
  row(run, "latency p50 / p95 ms", fmt(lat.p50, 0) + " / " + fmt(lat.p95, 0), "n");
  row(run, "batches (mean size)", fmt(s.batches) + " (" + fmt(s.mean_batch_size, 1) + ")", "n");
  if (s.stopped_by) row(run, "stopped by", s.stopped_by);
  if (data.run_dir) row(run, "run folder", data.run_dir);
  const settings = $("settings");
  settings.replaceChildren();
  for (const [k, v] of Object.entries(data.settings || {})) {
    row(settings, k, typeof v === "object" && v !== null ? JSON.stringify(v) : fmt(v));
  }
  if (data.mode === "live") $("people").textContent = "(" + fmt(data.people_without_mask) + ")";
  const viewers = data.viewers || {};
  $("viewers").textContent = data.mode === "live" ? `${fmt(viewers.pages)} page(s) watching` : "";
}

function faceItem(face) {
  const pictures = [face.face_url, face.cam_url].map((url, i) => url
    ? el("img", { src: url, alt: i ? "CAM" : "face", loading: "lazy" })
    : el("div", { class: "nocam", text: i ? "no CAM" : "no picture" }));
  const when = face.timestamp !== null && face.timestamp > 1e9
    ? new Date(face.timestamp * 1000).toLocaleString()
    : (face.timestamp !== null ? fmt(face.timestamp, 2) + " s" : new Date(face.seen * 1000).toLocaleTimeString());
  const p = face.label === "with_mask" ? 1 - face.p_without_mask : face.p_without_mask;
  const who = el("div", { class: "who" },
    el("div", { class: "p " + face.label, text: `${face.label} ${fmt(p, 2)}` }),
    el("div", { title: face.uri || face.source_id,
                text: face.uri ? face.uri.split("/").pop() : face.source_id }),
    el("div", { class: "muted", text: `${when} · frame ${face.frame_index}` +
                (face.track_id !== null ? ` · #${face.track_id}` : "") }));
  const li = el("li", { "data-face": String(face.id) }, pictures[0], pictures[1], who);
  return li;
}

function addFaces(faces, newestFirst) {
  const list = $("faces");
  for (const face of faces) {
    view.lastFace = Math.max(view.lastFace, face.id);
    if (newestFirst) list.insertBefore(faceItem(face), list.firstChild);
    else list.appendChild(faceItem(face));
  }
  while (newestFirst && list.children.length > 60) list.removeChild(list.lastChild);
  view.faces = list.children.length;
}

function live() {
  const events = new EventSource("/api/events?after=" + view.lastFace);
  events.addEventListener("state", (e) => {
    const data = JSON.parse(e.data);
    view.states += 1;
    renderSources(data.sources);
    renderSummary(data.summary);
    if (!view.ended) setStatus(data.summary.finished ? "finished" : "running");
  });
  events.addEventListener("faces", (e) => addFaces(JSON.parse(e.data).faces, true));
  events.addEventListener("end", () => {
    view.ended = true;
    events.close();
    setStatus("finished");
  });
  events.onerror = () => { if (!view.ended) setStatus("connection lost, retrying", "lost"); };
}

function seconds(text) {
  text = text.trim();
  if (!text) return "";
  if (/^-?\d+(\.\d+)?$/.test(text)) return text;
  const t = Date.parse(text);
  return Number.isNaN(t) ? "" : String(t / 1000);
}

async function gallery() {
  const q = new URLSearchParams({ limit: "300", source: $("f-source").value,
    label: $("f-label").value, from: seconds($("f-from").value), to: seconds($("f-to").value) });
  const data = await (await fetch("/api/faces?" + q)).json();
  $("faces").replaceChildren();
  addFaces(data.faces, false);
  $("f-count").textContent = `${data.faces.length} of ${data.matched} faces shown`;
  $("people").textContent = "(" + data.matched + ")";
}

async function run() {
  document.body.classList.add("run");
  $("mode").textContent = "run view";
  $("panel-title").firstChild.textContent = "faces ";
  $("filters").hidden = false;
  const sources = (await (await fetch("/api/sources")).json()).sources;
  renderSources(sources);
  for (const source of sources) $("f-source").appendChild(el("option", { value: source.id, text: source.id }));
  $("f-label").value = "without_mask";
  $("f-apply").onclick = gallery;
  await gallery();
  setStatus("finished");
  view.ended = true;
}

async function start() {
  try {
    const summary = await (await fetch("/api/summary")).json();
    view.mode = summary.mode;
    renderSummary(summary);
    if (summary.mode === "live") live(); else await run();
  } catch (err) {
    setStatus("cannot reach the server", "lost");
    setTimeout(start, 2000);
  }
}

start();
