// The playground: a client of the public API (/v1/...), nothing more.
// The token lives in sessionStorage and goes out only as an Authorization
// header: never in a URL (so EventSource, which cannot send headers, is not
// used; the event stream is read with fetch).
"use strict";

const TOKEN_KEY = "sound-creator.token";
const STATUS_COLORS = { succeeded: "#16794c", failed: "#c0262d", canceled: "#b45309", expired: "#8a8f98", running: "#4f46e5", queued: "#a5b4fc" };
const $ = (id) => document.getElementById(id);

const state = {
  limits: { prompt: 100, duration: 30 },
  models: [],
  melody: null,      // {upload_id, name}
  task: null,        // task id being followed
  stream: null,      // AbortController of the event stream
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "http_" + status;
    this.field = e.field || null;
  }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch (_) { doc = null; }
  if (!response.ok) throw new ApiError(response.status, doc);
  return doc;
}

// ---------------------------------------------------------------- token

function showTokenState() {
  const has = token() !== "";
  $("token").value = "";
  $("token").placeholder = has ? "token set for this tab" : "MARKETPLACE_TOKEN or an API_KEYS token";
  $("token-forget").hidden = !has;
  $("submit").disabled = !has;
}

async function useToken(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  $("token-error").textContent = "";
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await loadModels();
  } catch (e) {
    if (e.status === 401) sessionStorage.removeItem(TOKEN_KEY);
    $("token-error").textContent = e.message;
    showTokenState();
    return;
  }
  showTokenState();
  refreshUsage();
}

// ---------------------------------------------------------------- form

async function loadLimits() {
  try {
    const doc = await (await fetch("/v1/openapi.json")).json();
    const props = doc.components.schemas.CallRequest.properties;
    state.limits.prompt = props.prompt.maxLength || state.limits.prompt;
    state.limits.duration = props.duration.maximum || state.limits.duration;
    $("duration").max = state.limits.duration;
  } catch (_) { /* the defaults stand */ }
  updateCount();
}

async function loadModels() {
  const doc = await api("GET", "/v1/models");
  state.models = doc.models || [];
  fillModels();
}

function fillModels() {
  const family = $("type").value;
  const select = $("model");
  select.replaceChildren(new Option("the type's default", ""));
  for (const m of state.models.filter((m) => m.family === family)) {
    const notes = [m.default ? "default" : "", m.melody ? "melody" : "", m.channels === 2 ? "stereo" : ""].filter(Boolean);
    select.add(new Option(m.id + (notes.length ? ` (${notes.join(", ")})` : ""), m.id));
  }
}

function updateCount() {
  const n = [...$("prompt").value].length; // Unicode characters, as the server counts
  const count = $("prompt-count");
  count.textContent = `${n} / ${state.limits.prompt}`;
  count.classList.toggle("over", n > state.limits.prompt);
}

function numberOr(id, fallback) {
  const v = $(id).value.trim();
  return v === "" ? fallback : Number(v);
}

function clearErrors() {
  for (const el of document.querySelectorAll(".field.invalid")) el.classList.remove("invalid");
  for (const el of document.querySelectorAll("#call-form .error")) el.textContent = "";
}

// Puts a contract error next to the field it names (`params.top_k`,
// `melody.upload_id`, ...), or under the form when it names none here.
function showError(error, fallbackBox) {
  const field = error.field && document.querySelector(`[data-field="${CSS.escape(error.field)}"]`);
  if (field) {
    field.classList.add("invalid");
    field.querySelector(".error").textContent = error.message;
    const details = field.closest("details");
    if (details) details.open = true;
    const input = field.querySelector("input, select, textarea");
    if (input) input.focus();
  } else {
    $(fallbackBox).textContent = error.message;
  }
}

function requestBody() {
  let seed = $("seed").value.trim();
  // A seed is always sent, so that the result can always be made again.
  if (seed === "") seed = String(Math.floor(Math.random() * 2 ** 31));
  const body = {
    type: $("type").value,
    prompt: $("prompt").value,
    duration: numberOr("duration", 8),
    samples: numberOr("samples", 1),
    user_id: "playground",
    params: {
      temperature: numberOr("temperature", 1.0),
      top_k: numberOr("top_k", 250),
      top_p: numberOr("top_p", 0.0),
      cfg_coef: numberOr("cfg_coef", 3.0),
      seed: Number(seed),
    },
    format: $("format").value,
  };
  if ($("model").value) body.model = $("model").value;
  if (state.melody) body.melody = { upload_id: state.melody.upload_id };
  const callback = $("callback_url").value.trim();
  if (callback) body.callback_url = callback;
  return body;
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const body = requestBody();
  $("submit").disabled = true;
  try {
    const doc = await api("POST", "/v1/call", body);
    follow(doc.task_id, body.params.seed);
  } catch (e) {
    showError(e, "form-error");
  } finally {
    $("submit").disabled = token() === "";
  }
}

// ---------------------------------------------------------------- melody

const UPLOAD_TYPES = { wav: "audio/wav", flac: "audio/flac", mp3: "audio/mpeg", ogg: "audio/ogg" };

function uploadType(file) {
  if (Object.values(UPLOAD_TYPES).includes(file.type)) return file.type;
  if (file.type === "audio/x-wav" || file.type === "audio/wave") return "audio/wav";
  const ext = (file.name || "").split(".").pop().toLowerCase();
  return UPLOAD_TYPES[ext] || file.type || "application/octet-stream";
}

async function uploadMelody(blob, name) {
  const box = document.querySelector('[data-field="melody.upload_id"]');
  box.classList.remove("invalid");
  box.querySelector(".error").textContent = "";
  $("drop-text").textContent = `Uploading ${name}…`;
  try {
    const contentType = uploadType(blob);
    const link = await api("POST", "/v1/uploads", { content_type: contentType, bytes: blob.size });
    const put = await fetch(link.url, { method: link.method, headers: link.headers, body: blob });
    if (!put.ok) {
      let doc = null;
      try { doc = await put.json(); } catch (_) { /* storage answers in its own format */ }
      throw new ApiError(put.status, doc);
    }
    state.melody = { upload_id: link.upload_id, name };
    $("drop-text").textContent = `Melody: ${name} (${(blob.size / 1024).toFixed(0)} KiB)`;
    $("melody-clear").hidden = false;
  } catch (e) {
    state.melody = null;
    $("drop-text").textContent = "Drop a WAV, FLAC, MP3 or Ogg file here.";
    showError({ field: "melody.upload_id", message: e.message }, "form-error");
  }
}

function clearMelody() {
  state.melody = null;
  $("melody-clear").hidden = true;
  $("drop-text").textContent = "Drop a WAV, FLAC, MP3 or Ogg file here.";
}

// The microphone records in the browser's own format (WebM/Opus in
// Chromium), which the API does not take: decode it and send 16-bit WAV.
let recorder = null;
async function toggleRecording() {
  const button = $("record");
  if (recorder) { recorder.stop(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    showError({ field: "melody.upload_id", message: "the microphone is not available: " + e.message }, "form-error");
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    button.classList.remove("recording");
    button.textContent = "● Record";
    const recorded = new Blob(chunks, { type: chunks[0] ? chunks[0].type : "audio/webm" });
    const audio = await new AudioContext().decodeAudioData(await recorded.arrayBuffer());
    uploadMelody(new Blob([wav(audio)], { type: "audio/wav" }), "recording.wav");
  };
  recorder.start();
  button.classList.add("recording");
  button.textContent = "■ Stop";
}

function wav(audio) {
  const channels = audio.numberOfChannels, rate = audio.sampleRate, frames = audio.length;
  const buffer = new ArrayBuffer(44 + frames * channels * 2);
  const view = new DataView(buffer);
  const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + frames * channels * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
  view.setUint16(22, channels, true); view.setUint32(24, rate, true);
  view.setUint32(28, rate * channels * 2, true); view.setUint16(32, channels * 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, frames * channels * 2, true);
  const data = [...Array(channels).keys()].map((c) => audio.getChannelData(c));
  let at = 44;
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < channels; c++) {
      const s = Math.max(-1, Math.min(1, data[c][i]));
      view.setInt16(at, s < 0 ? s * 0x8000 : s * 0x7fff, true);
      at += 2;
    }
  }
  return buffer;
}

// ---------------------------------------------------------------- a task

function setProgress(fraction) {
  const percent = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  $("progress-fill").style.width = percent + "%";
  $("progress").setAttribute("aria-valuenow", String(percent));
  return percent;
}

function follow(taskId, seed) {
  if (state.stream) state.stream.abort();
  state.task = taskId;
  state.seed = seed;
  $("task").hidden = false;
  $("task-id").textContent = taskId;
  $("results").replaceChildren();
  $("task-error").textContent = "";
  $("cancel").hidden = false;
  $("cancel").disabled = false;
  setProgress(0);
  $("progress-text").textContent = "0 %";
  showStatus({ status: "queued" });
  readEvents(taskId);
}

function showStatus(event) {
  const el = $("task-status");
  el.dataset.status = event.status;
  let text = event.status;
  if (event.status === "queued" && event.queue) {
    text += ` · ${event.queue.queued} job${event.queue.queued === 1 ? "" : "s"} waiting (this one among them), ${event.queue.in_flight} generating`;
  }
  el.textContent = text;
}

// Reads GET /v1/events/{id} with fetch (EventSource cannot send the
// token as a header) and reconnects after `retry:` when the answer ends
// before the result, as a buffering deployment makes it do.
async function readEvents(taskId) {
  let retry = 2000;
  while (state.task === taskId) {
    const controller = new AbortController();
    state.stream = controller;
    let finished = false;
    try {
      const response = await fetch(`/v1/events/${encodeURIComponent(taskId)}`, {
        headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (!response.ok) {
        let doc = null;
        try { doc = await response.json(); } catch (_) { /* not JSON */ }
        throw new ApiError(response.status, doc);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const frame = { event: "message", data: "" };
          for (const line of block.split("\n")) {
            const colon = line.indexOf(":");
            if (colon <= 0) continue; // a comment (keep-alive) or a blank
            const name = line.slice(0, colon), val = line.slice(colon + 1).replace(/^ /, "");
            if (name === "event") frame.event = val;
            else if (name === "data") frame.data += val;
            else if (name === "retry") retry = Number(val) || retry;
          }
          if (frame.data && onEvent(taskId, frame.event, JSON.parse(frame.data))) finished = true;
        }
      }
    } catch (e) {
      if (e.name === "AbortError") return;
      if (e instanceof ApiError && e.status < 500 && e.status !== 429) {
        $("task-error").textContent = e.message;
        $("cancel").hidden = true;
        return;
      }
    }
    if (finished) return;
    await new Promise((resolve) => setTimeout(resolve, retry));
  }
}

// Returns true on the result event: the stream's last.
function onEvent(taskId, name, data) {
  if (state.task !== taskId) return true;
  if (name === "status") {
    showStatus(data);
    if (data.status === "running" && $("progress-text").textContent === "0 %") $("progress-text").textContent = "0 % · decoding";
  } else if (name === "progress") {
    const percent = setProgress(data.progress);
    $("progress-text").textContent = data.steps ? `${percent} % · step ${data.step} of ${data.steps}` : `${percent} %`;
  } else if (name === "result") {
    showResult(data);
    refreshUsage();
    return true;
  }
  return false;
}

function showResult(doc) {
  showStatus(doc);
  $("cancel").hidden = true;
  if (doc.status === "succeeded") {
    setProgress(1);
    $("progress-text").textContent = "100 %";
  }
  if (doc.error) $("task-error").textContent = `${doc.error.code}: ${doc.error.message}`;
  const results = $("results");
  results.replaceChildren();
  (doc.outputs || []).forEach((output, i) => results.append(clip(doc, output, i)));
}

function clip(doc, output, index) {
  const box = document.createElement("article");
  box.className = "clip";
  const title = document.createElement("h3");
  title.className = "muted";
  title.textContent = `Sample ${index + 1} · ${output.duration.toFixed(2)} s · ${output.sample_rate} Hz · ${output.channels === 2 ? "stereo" : "mono"}`;
  const canvas = document.createElement("canvas");
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "metadata";
  audio.src = output.url;
  const link = document.createElement("a");
  link.href = output.url;
  link.download = `${doc.task_id}-${index + 1}.${extension(output.content_type)}`;
  link.textContent = `Download (${(output.bytes / 1024).toFixed(0)} KiB, ${output.content_type})`;
  const facts = document.createElement("dl");
  const m = doc.metrics || {};
  const rows = [["Queue", ms(m.queue_ms)], ["Inference", ms(m.inference_ms)], ["Total", ms(m.total_ms)], ["Seed", state.task === doc.task_id && state.seed !== undefined ? String(state.seed) : "–"]];
  for (const [k, v] of rows) {
    const div = document.createElement("div");
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    if (k === "Seed") dd.className = "seed";
    div.append(dt, dd);
    facts.append(div);
  }
  box.append(title, canvas, audio, link, facts);
  drawWaveform(canvas, output.url);
  return box;
}

function extension(contentType) {
  return { "audio/wav": "wav", "audio/flac": "flac", "audio/mpeg": "mp3", "audio/ogg": "ogg" }[contentType] || "bin";
}

function ms(v) { return v === null || v === undefined ? "–" : v < 1000 ? `${v} ms` : `${(v / 1000).toFixed(2)} s`; }

// Min/max per pixel column of the first channel.
async function drawWaveform(canvas, url) {
  try {
    const bytes = await (await fetch(url)).arrayBuffer();
    const audio = await new OfflineAudioContext(1, 1, 8000).decodeAudioData(bytes);
    const { ctx, width, height } = sizeCanvas(canvas);
    const data = audio.getChannelData(0);
    const per = Math.max(1, Math.floor(data.length / width));
    ctx.fillStyle = "#4f46e5";
    for (let x = 0; x < width; x++) {
      let lo = 1, hi = -1;
      for (let i = x * per; i < Math.min(data.length, (x + 1) * per); i++) {
        if (data[i] < lo) lo = data[i];
        if (data[i] > hi) hi = data[i];
      }
      if (hi < lo) continue;
      const top = (1 - hi) / 2 * height, bottom = (1 - lo) / 2 * height;
      ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
    canvas.dataset.drawn = "true";
  } catch (_) {
    canvas.dataset.drawn = "false"; // storage on another origin without CORS: the player still works
  }
}

async function cancel() {
  const id = state.task;
  $("cancel").disabled = true;
  try {
    await api("POST", `/v1/cancel/${encodeURIComponent(id)}`);
  } catch (e) {
    $("task-error").textContent = e.message;
    $("cancel").disabled = false;
  }
}

// ---------------------------------------------------------------- usage

function sizeCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(100, Math.floor(canvas.clientWidth));
  const height = Math.floor(canvas.clientHeight || Number(canvas.getAttribute("height")) || 120);
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.style.height = height + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

// Bars per day: `series` is [{name, color, values[]}]; `stacked` piles them.
function barChart(canvas, days, series, stacked, format) {
  const { ctx, width, height } = sizeCanvas(canvas);
  const left = 36, bottom = 18, top = 6;
  const plotH = height - bottom - top, plotW = width - left - 4;
  const totals = days.map((_, d) => stacked ? series.reduce((s, x) => s + x.values[d], 0) : Math.max(0, ...series.map((x) => x.values[d])));
  const max = Math.max(1e-9, ...totals);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#667085";
  ctx.strokeStyle = "#dde1e8";
  for (const f of [0, 0.5, 1]) {
    const y = top + plotH * (1 - f);
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(width, y); ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(format(max * f), left - 4, y + 4);
  }
  const slot = plotW / days.length;
  const barW = Math.max(4, slot * 0.6);
  days.forEach((day, d) => {
    const x0 = left + d * slot + (slot - barW) / 2;
    let base = 0;
    series.forEach((s, i) => {
      const v = s.values[d];
      if (!v) return;
      ctx.fillStyle = s.color;
      const w = stacked ? barW : barW / series.length;
      const x = stacked ? x0 : x0 + i * w;
      const h = v / max * plotH;
      const y = top + plotH - (stacked ? base + h : h);
      ctx.fillRect(x, y, w - (stacked ? 0 : 1), h);
      if (stacked) base += h;
    });
    ctx.fillStyle = "#667085";
    ctx.textAlign = "center";
    ctx.fillText(day.slice(5), left + d * slot + slot / 2, height - 4);
  });
  canvas.dataset.values = JSON.stringify(series.map((s) => ({ name: s.name, values: s.values })));
}

function legend(el, series) {
  el.replaceChildren(...series.flatMap((s) => {
    const i = document.createElement("i"); i.style.background = s.color;
    return [i, document.createTextNode(s.name)];
  }));
}

function utcDay(date) { return date.toISOString().slice(0, 10); }

async function refreshUsage() {
  if (!token()) return;
  try {
    const total = await api("GET", "/v1/stats");
    $("total-requests").textContent = String(total.requests);
    $("total-succeeded").textContent = String(total.by_status.succeeded || 0);
    $("total-audio").textContent = total.audio_seconds.toFixed(1);
    const lat = total.latency_ms || {};
    $("total-latency").textContent = lat.p50 === null || lat.p50 === undefined ? "–" : `${ms(lat.p50)} / ${ms(lat.p95)}`;
    $("totals").dataset.requests = String(total.requests);
    $("totals").dataset.audioSeconds = String(total.audio_seconds);
    showHistory(total.recent || []);

    const now = new Date();
    const starts = [...Array(7).keys()].reverse().map((back) => new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - back)));
    const perDay = await Promise.all(starts.map((start) => {
      const end = new Date(start.getTime() + 86400000);
      const q = new URLSearchParams({ from: start.toISOString().replace(".000Z", "Z"), to: end.toISOString().replace(".000Z", "Z") });
      return api("GET", "/v1/stats?" + q);
    }));
    const days = starts.map(utcDay);
    const statuses = ["succeeded", "failed", "canceled", "expired", "running", "queued"]
      .filter((s) => perDay.some((d) => d.by_status[s]));
    const requestSeries = statuses.map((s) => ({ name: s, color: STATUS_COLORS[s], values: perDay.map((d) => d.by_status[s] || 0) }));
    barChart($("chart-requests"), days, requestSeries, true, (v) => String(Math.round(v)));
    legend($("legend-requests"), requestSeries);
    barChart($("chart-audio"), days, [{ name: "audio seconds", color: "#16794c", values: perDay.map((d) => d.audio_seconds) }], false, (v) => v.toFixed(0));
    const latencySeries = [
      { name: "p50", color: "#a5b4fc", values: perDay.map((d) => (d.latency_ms.p50 || 0) / 1000) },
      { name: "p95", color: "#4f46e5", values: perDay.map((d) => (d.latency_ms.p95 || 0) / 1000) },
    ];
    barChart($("chart-latency"), days, latencySeries, false, (v) => v.toFixed(1));
    legend($("legend-latency"), latencySeries);
    $("usage").dataset.rendered = String(Date.now());
  } catch (e) {
    $("total-requests").textContent = e.message;
  }
}

function showHistory(recent) {
  const rows = recent.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.task = t.task_id;
    for (const text of [new Date(t.created_at).toLocaleString(), t.type, `${t.duration} s`, t.status]) {
      const td = document.createElement("td"); td.textContent = text; tr.append(td);
    }
    tr.addEventListener("click", () => follow(t.task_id, undefined));
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td"); td.colSpan = 4; td.className = "muted"; td.textContent = "No tasks yet.";
    tr.append(td); rows.push(tr);
  }
  $("history-rows").replaceChildren(...rows);
}

// ---------------------------------------------------------------- wiring

function init() {
  $("token-form").addEventListener("submit", useToken);
  $("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showTokenState(); });
  $("call-form").addEventListener("submit", submit);
  $("prompt").addEventListener("input", updateCount);
  $("type").addEventListener("change", fillModels);
  $("cancel").addEventListener("click", cancel);
  $("refresh").addEventListener("click", refreshUsage);
  $("record").addEventListener("click", toggleRecording);
  $("melody-clear").addEventListener("click", clearMelody);
  $("melody-file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) uploadMelody(f, f.name); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer.files[0];
    if (f) uploadMelody(f, f.name);
  });
  showTokenState();
  loadLimits();
  if (token()) {
    loadModels().catch((e) => { $("token-error").textContent = e.message; });
    refreshUsage();
  }
}

document.addEventListener("DOMContentLoaded", init);
