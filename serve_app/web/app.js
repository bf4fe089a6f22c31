// The speechtotext page: upload or record audio, follow the job, read the transcript while it
// plays. Plain JavaScript served as is (no build step, nothing from another origin). Every
// call goes to the REST API of the same service; the API key, when the service needs one, is
// kept in this browser's localStorage and sent in the Authorization header, never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "speechtotext.apiKey";
const PAGE_SIZE = 10;
const FINAL = new Set(["COMPLETED", "FAILED"]);

const state = {
  key: localStorage.getItem(KEY_STORE) || "",
  cursors: [null], // the cursor of each page shown so far; the last is the current page
  next: null, // the server's cursor of the page after this one
  query: "",
  open: null, // id of the job in the transcript view
  words: [], // [{start, end, el, seg}] of the open transcript, in time order
  current: null, // the highlighted word
  audioUrl: null,
  languages: {}, // model -> language codes
  listTimer: null,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// -- the API ---------------------------------------------------------------------------------
function authHeaders(extra) {
  const headers = new Headers(extra || {});
  if (state.key) headers.set("Authorization", "Bearer " + state.key);
  return headers;
}

async function api(path, options = {}) {
  let res;
  try {
    res = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  } catch (err) {
    throw new ApiError(0, "network", "The service cannot be reached (" + err.message + ").");
  }
  if (!res.ok) throw await errorOf(res.status, () => res.text());
  return res;
}

// Our errors are {"error": {"code", "message"}}; anything else is shown by its status.
async function errorOf(status, readText) {
  let code = "http_" + status;
  let message = "The service answered " + status + ".";
  try {
    const body = JSON.parse(await readText());
    if (body && body.error && body.error.message) {
      code = body.error.code || code;
      message = body.error.message;
    }
  } catch (_) { /* not JSON: keep the status */ }
  if (status === 401) showKeyForm("This service needs an API key: enter yours above.");
  return new ApiError(status, code, message);
}

// -- messages --------------------------------------------------------------------------------
function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}
function clearError() {
  $("error").hidden = true;
}
function fail(err) {
  showError(err instanceof ApiError ? err.message : "Something went wrong: " + err.message);
}

function showKeyForm(why) {
  $("key-form").hidden = false;
  if (why) showError(why);
  if (!state.key) $("api-key").focus();
}

// -- choices from the service ----------------------------------------------------------------
const languageNames = (() => {
  try { return new Intl.DisplayNames(["en"], { type: "language" }); } catch (_) { return null; }
})();
function languageName(code) {
  try { return (languageNames && languageNames.of(code)) || code; } catch (_) { return code; }
}

async function loadChoices() {
  const [models, languages] = await Promise.all([
    api("/api/v1/models").then((r) => r.json()),
    api("/api/v1/languages").then((r) => r.json()),
  ]);
  state.languages = languages.models || {};
  const select = $("model");
  select.replaceChildren();
  for (const m of models.models) {
    const option = new Option(m.id + (m.multilingual ? "" : " (English)"), m.id, m.default, m.default);
    option.title = m.description;
    select.add(option);
  }
  fillLanguages();
}

function fillLanguages() {
  const select = $("language");
  const keep = select.value;
  select.replaceChildren(new Option("Detect", ""));
  const codes = (state.languages[$("model").value] || []).slice();
  codes.sort((a, b) => languageName(a).localeCompare(languageName(b)));
  for (const code of codes) select.add(new Option(languageName(code) + " (" + code + ")", code));
  select.value = codes.includes(keep) ? keep : "";
}

// -- uploads ---------------------------------------------------------------------------------
function uploadItem(name) {
  const li = document.createElement("li");
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute("aria-label", name);
  const status = document.createElement("span");
  status.className = "status";
  li.append(label, bar, status);
  $("uploads").prepend(li);
  const set = (fraction, text, kind) => {
    if (fraction === null) bar.removeAttribute("value");
    else bar.value = fraction;
    status.textContent = text;
    li.dataset.state = kind || "";
  };
  return { li, set };
}

function upload(file) {
  const item = uploadItem(file.name);
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", $("model").value);
  if ($("language").value) form.append("language", $("language").value);
  form.append("task", $("task").value);
  form.append("word_timestamps", $("word-timestamps").checked ? "true" : "false");
  if ($("diarize").checked) form.append("diarize", "true");
  form.append("timestamps", "true"); // sentence segments, cut at word times: a transcript to read
  form.append("sync", "false"); // a job: its audio is kept for the player and it survives a reload

  // XMLHttpRequest, not fetch: only it reports the bytes sent.
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/v1/transcriptions");
  if (state.key) xhr.setRequestHeader("Authorization", "Bearer " + state.key);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) item.set(e.loaded / e.total, "Uploading " + Math.floor((100 * e.loaded) / e.total) + "%");
  };
  xhr.onerror = () => {
    item.set(0, "Upload failed: the service cannot be reached.", "failed");
    showError(file.name + ": the upload failed (the service cannot be reached).");
  };
  xhr.onload = async () => {
    if (xhr.status !== 202) {
      const err = await errorOf(xhr.status, async () => xhr.responseText);
      item.set(0, err.message, "failed");
      showError(file.name + ": " + err.message);
      return;
    }
    const job = JSON.parse(xhr.responseText);
    item.li.dataset.job = job.id;
    item.set(0, "Queued", "queued");
    refreshJobs();
    follow(job.id, item);
  };
  item.set(0, "Uploading 0%");
  xhr.send(form);
}

// A job's events (server-sent events read with fetch, so the key goes in a header); polling
// when the stream cannot be had or ends early.
async function follow(id, item) {
  const shown = (status, progress) => {
    if (status === "PENDING") item.set(0, "Queued", "queued");
    else if (status === "PROCESSING") item.set(progress || 0, "Transcribing " + Math.round(100 * (progress || 0)) + "%", "running");
  };
  const ended = async (status, error) => {
    if (status === "COMPLETED") {
      item.set(1, "Done", "done");
      refreshJobs();
      if (!state.open || state.followOpen) openJob(id, { followed: true });
    } else {
      item.set(0, "Failed: " + (error || "unknown error"), "failed");
      showError(item.li.querySelector(".name").textContent + ": " + (error || "the transcription failed"));
      refreshJobs();
    }
  };
  try {
    const res = await api("/api/v1/transcriptions/" + id + "/events");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = /^event: (.*)$/m.exec(block);
        const data = /^data: (.*)$/m.exec(block);
        if (!event || !data) continue;
        const body = JSON.parse(data[1]);
        if (event[1] === "progress") shown(body.status, body.progress);
        else if (event[1] === "completed" || event[1] === "failed") return ended(body.status, body.error);
      }
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return ended("FAILED", err.message);
  }
  for (;;) { // the fallback: poll the job
    try {
      const job = await (await api("/api/v1/transcriptions/" + id)).json();
      if (FINAL.has(job.status)) return ended(job.status, job.error);
      shown(job.status, job.progress);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return ended("FAILED", err.message);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// -- recording -------------------------------------------------------------------------------
let recorder = null;
async function toggleRecording() {
  const button = $("record");
  if (recorder) {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError("This browser cannot record audio here (it needs MediaRecorder and a secure origin).");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError("The microphone is not available: " + err.message);
    return;
  }
  const chunks = [];
  const started = Date.now();
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
  const timer = setInterval(() => {
    $("record-state").textContent = "Recording " + ((Date.now() - started) / 1000).toFixed(0) + " s";
  }, 500);
  recorder.onstop = () => {
    clearInterval(timer);
    stream.getTracks().forEach((t) => t.stop());
    const type = recorder.mimeType || "audio/webm";
    recorder = null;
    button.textContent = "\u25CF Record";
    button.setAttribute("aria-pressed", "false");
    $("record-state").textContent = "";
    const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
    const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    if (chunks.length) upload(new File(chunks, "recording-" + stamp + "." + ext, { type }));
  };
  recorder.start(1000);
  button.textContent = "\u25A0 Stop";
  button.setAttribute("aria-pressed", "true");
}

// -- the jobs list ---------------------------------------------------------------------------
async function refreshJobs() {
  clearTimeout(state.listTimer);
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const cursor = state.cursors[state.cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  if (state.query) params.set("q", state.query);
  let page;
  try {
    page = await (await api("/api/v1/transcriptions?" + params)).json();
  } catch (err) {
    if (err.status !== 401) fail(err);
    return;
  }
  state.next = page.next_cursor;
  $("older").disabled = !page.next_cursor;
  $("newer").disabled = state.cursors.length < 2;
  const rows = page.items.map(jobRow);
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 4;
    td.className = "muted";
    td.textContent = state.query ? "No job's file name matches." : "No jobs yet.";
    tr.append(td);
    rows.push(tr);
  }
  $("jobs").replaceChildren(...rows);
  if (page.items.some((j) => !FINAL.has(j.status))) state.listTimer = setTimeout(refreshJobs, 2000);
}

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.job = job.id;
  if (job.id === state.open) tr.className = "selected";
  const name = document.createElement("button");
  name.type = "button";
  name.className = "link";
  name.textContent = job.filename;
  name.title = job.text_preview || job.filename;
  name.onclick = () => openJob(job.id);
  const status = document.createElement("span");
  status.className = "badge " + job.status.toLowerCase();
  status.textContent = job.status === "PROCESSING" ? "PROCESSING " + Math.round(100 * job.progress) + "%" : job.status;
  if (job.error) status.title = job.error;
  const when = new Date(job.created_at);
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "delete";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", "Delete " + job.filename);
  remove.onclick = () => deleteJob(job);
  const cells = [name, status, when.toLocaleString(), remove].map((content) => {
    const td = document.createElement("td");
    td.append(content);
    return td;
  });
  tr.append(...cells);
  return tr;
}

async function deleteJob(job) {
  if (!window.confirm("Delete the job of " + job.filename + " (its audio and transcript)?")) return;
  try {
    await api("/api/v1/transcriptions/" + job.id, { method: "DELETE" });
  } catch (err) {
    if (err.status !== 404) return fail(err);
  }
  if (state.open === job.id) closeJob();
  refreshJobs();
}

// -- the transcript view ---------------------------------------------------------------------
function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = seconds - 60 * m;
  const h = Math.floor(m / 60);
  const mm = h ? String(m % 60).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + s.toFixed(1).padStart(4, "0");
}

function closeJob() {
  state.open = null;
  state.words = [];
  state.current = null;
  if (state.audioUrl) URL.revokeObjectURL(state.audioUrl);
  state.audioUrl = null;
  $("player").removeAttribute("src");
  $("view").hidden = true;
  $("empty").hidden = false;
  history.replaceState(null, "", location.pathname);
}

async function openJob(id, { followed = false } = {}) {
  let job;
  try {
    job = await (await api("/api/v1/transcriptions/" + id)).json();
  } catch (err) {
    if (err.status === 404) history.replaceState(null, "", location.pathname);
    return fail(err);
  }
  state.followOpen = followed;
  state.open = id;
  history.replaceState(null, "", "#job=" + id);
  for (const tr of $("jobs").children) tr.classList.toggle("selected", tr.dataset.job === id);
  $("empty").hidden = true;
  $("view").hidden = false;
  if (job.status !== "COMPLETED" || !job.result) {
    renderPending(job);
    if (!FINAL.has(job.status)) setTimeout(() => state.open === id && openJob(id, { followed }), 1500);
    return;
  }
  renderTranscript(job);
  loadAudio(id);
  if (!followed) $("transcript").focus();
}

function renderPending(job) {
  $("meta").textContent = job.filename + " \u00B7 " + job.status + (job.error ? ": " + job.error : "");
  $("segments").replaceChildren();
  $("view").dataset.ready = "false";
}

function renderTranscript(job) {
  const r = job.result;
  const parts = [job.filename];
  let lang = languageName(r.language) + " (" + r.language;
  if (r.language_probability != null) lang += ", " + Math.round(100 * r.language_probability) + "%";
  parts.push("Language: " + lang + ")", "Model: " + r.model, clock(r.duration) + " of audio");
  if (r.word_timestamps) parts.push("word times: " + r.word_timestamps);
  if (r.speakers && r.speakers.length) {
    parts.push(r.speakers.map((s) => s.speaker + " " + clock(s.seconds)).join(", "));
  }
  $("meta").textContent = parts.join(" \u00B7 ");
  state.words = [];
  state.current = null;
  const items = r.segments.map((seg, i) => {
    const li = document.createElement("li");
    li.dataset.start = seg.start;
    li.dataset.end = seg.end;
    const time = document.createElement("button");
    time.type = "button";
    time.className = "time";
    time.dataset.start = seg.start;
    time.textContent = clock(seg.start);
    time.setAttribute("aria-label", "Play from " + clock(seg.start));
    const text = document.createElement("span");
    text.className = "text";
    if (seg.words && seg.words.length) {
      seg.words.forEach((w) => {
        const span = document.createElement("span");
        span.className = "word";
        span.dataset.start = w.start;
        span.dataset.end = w.end;
        span.textContent = w.word;
        text.append(span, " ");
        state.words.push({ start: w.start, end: w.end, el: span, seg: li });
      });
    } else {
      text.textContent = seg.text.trim();
    }
    if (seg.speaker) {
      const who = document.createElement("span");
      who.className = "speaker";
      who.textContent = seg.speaker;
      text.prepend(who, " ");
    }
    li.append(time, text);
    li.id = "seg-" + i;
    return li;
  });
  state.words.sort((a, b) => a.start - b.start);
  $("segments").replaceChildren(...items);
  $("view").dataset.ready = "true";
  $("view").dataset.text = r.text;
}

async function loadAudio(id) {
  const player = $("player");
  const note = $("player-note");
  if (state.audioUrl) URL.revokeObjectURL(state.audioUrl);
  state.audioUrl = null;
  player.removeAttribute("src");
  player.hidden = false;
  note.hidden = true;
  try {
    // fetched with the key in a header, then played from memory (a URL would carry the key)
    const blob = await (await api("/api/v1/transcriptions/" + id + "/audio")).blob();
    if (state.open !== id) return;
    state.audioUrl = URL.createObjectURL(blob);
    player.src = state.audioUrl;
  } catch (err) {
    player.hidden = true;
    note.textContent = err.message;
    note.hidden = false;
  }
}

// The word being spoken: the last word that started at or before the player's time.
function highlight() {
  const t = $("player").currentTime;
  const words = state.words;
  let lo = 0;
  let hi = words.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (words[mid].start <= t + 0.01) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  const word = found >= 0 ? words[found] : null;
  if (word === state.current) return;
  if (state.current) {
    state.current.el.classList.remove("current");
    state.current.el.removeAttribute("aria-current");
    state.current.seg.classList.remove("active");
  }
  state.current = word;
  if (!word) return;
  word.el.classList.add("current");
  word.el.setAttribute("aria-current", "true");
  word.seg.classList.add("active");
  if (!$("player").paused) word.el.scrollIntoView({ block: "nearest" });
}

function tick() {
  highlight();
  if (!$("player").paused) requestAnimationFrame(tick);
}

function seek(seconds) {
  const player = $("player");
  player.currentTime = seconds;
  highlight();
}

async function copyText() {
  const text = $("view").dataset.text || "";
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copied").textContent = "Copied.";
  setTimeout(() => ($("copied").textContent = ""), 2000);
}

// The name a download is saved under: the transcript's name from the server's filename*
// (always the header's last parameter: a match inside the quoted fallback, which holds the
// uploader's text, is never taken), made a plain file name, with the format's own extension
// whatever the uploader called the audio (never .html, .exe, ...).
function downloadName(disposition, format) {
  const star = /;\s*filename\*=UTF-8''([^;\s"]+)\s*$/.exec(disposition);
  let name = "";
  try {
    name = star ? decodeURIComponent(star[1]) : "";
  } catch (err) {
    name = "";
  }
  const stem = name
    .replace(/\.[^.]*$/, "")
    .replace(/[\u0000-\u001f\u007f\\/:*?"<>|]/g, "_")
    .replace(/^[\s.]+|[\s.]+$/g, "")
    .slice(0, 200);
  return (stem || "transcript") + "." + format;
}

async function download(format) {
  try {
    const res = await api("/api/v1/transcriptions/" + state.open + "/download?format=" + format);
    const blob = await res.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = downloadName(res.headers.get("Content-Disposition") || "", format);
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (err) {
    fail(err);
  }
}

// -- wiring ----------------------------------------------------------------------------------
function isControl(el) {
  return el && el.closest("input, select, textarea, button, audio, a, [role=button]");
}

function wire() {
  const drop = $("drop");
  const picker = $("files");
  const take = (files) => { clearError(); for (const f of files) upload(f); };
  drop.onclick = () => picker.click();
  drop.onkeydown = (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); picker.click(); }
  };
  picker.onchange = () => { take(picker.files); picker.value = ""; };
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    take(e.dataTransfer.files);
  };
  $("record").onclick = toggleRecording;
  $("model").onchange = fillLanguages;
  $("error-close").onclick = clearError;

  $("key-form").onsubmit = (e) => {
    e.preventDefault();
    state.key = $("api-key").value.trim();
    if (state.key) localStorage.setItem(KEY_STORE, state.key);
    else localStorage.removeItem(KEY_STORE);
    clearError();
    start();
  };
  $("forget-key").onclick = () => {
    state.key = "";
    $("api-key").value = "";
    localStorage.removeItem(KEY_STORE);
  };

  $("search-form").onsubmit = (e) => {
    e.preventDefault();
    state.query = $("search").value.trim();
    state.cursors = [null];
    refreshJobs();
  };
  $("refresh").onclick = refreshJobs;
  $("older").onclick = () => { if (state.next) { state.cursors.push(state.next); refreshJobs(); } };
  $("newer").onclick = () => { if (state.cursors.length > 1) { state.cursors.pop(); refreshJobs(); } };

  const player = $("player");
  player.addEventListener("timeupdate", highlight);
  player.addEventListener("seeked", highlight);
  player.addEventListener("play", () => requestAnimationFrame(tick));
  $("segments").onclick = (e) => {
    const target = e.target.closest(".word, .time");
    if (target) seek(Number(target.dataset.start));
  };
  $("copy").onclick = copyText;
  for (const b of document.querySelectorAll(".downloads button")) b.onclick = () => download(b.dataset.format);

  document.addEventListener("keydown", (e) => {
    if (e.key !== " " || e.ctrlKey || e.altKey || e.metaKey || isControl(e.target) || !state.audioUrl) return;
    e.preventDefault(); // Space plays and pauses rather than scrolling
    if (player.paused) player.play(); else player.pause();
  });
}

async function start() {
  if (state.key) {
    $("api-key").value = state.key;
    $("key-form").hidden = false;
  }
  try {
    await loadChoices();
  } catch (err) {
    if (err.status !== 401) fail(err);
    return;
  }
  await refreshJobs();
  const wanted = /^#job=([0-9a-f-]{36})$/.exec(location.hash);
  if (wanted && state.open !== wanted[1]) openJob(wanted[1]);
}

wire();
start();
