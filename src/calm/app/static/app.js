// The page of `calm app`: every action is one request to the JSON API of calm/app/server.py.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null;
let shownClassifier = null; // the classifier the page's controls were set for (as JSON)
let last = null;            // the last classification
let threshold = null;       // the "unknown" threshold at the chosen rate (null: none is turned away)
let thresholdAsked = 0;     // requests for a threshold so far (a slider sends many; the last one counts)

function say(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

async function call(method, path, body) {
  const options = { method };
  if (body instanceof Blob) options.body = body;
  else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers = { "Content-Type": "application/json" };
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new Error(`the calm app server does not answer (${error.message}); is it still running?`);
  }
  if (!(response.headers.get("Content-Type") || "").startsWith("application/json")) {
    throw new Error((await response.text()).trim() || `${response.status} ${response.statusText}`);
  }
  const reply = await response.json();
  if (!response.ok) throw new Error(reply.error || `${response.status} ${response.statusText}`);
  return reply;
}

function withName(path, params) {
  return path + "?" + new URLSearchParams(params).toString();
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, attributes || {});
  for (const child of children) node.append(child);
  return node;
}

function render(next) {
  state = next;
  $("model").textContent = state.model;
  $("prompt").textContent = state.prompt;
  const list = $("classes");
  list.replaceChildren();
  for (const [name, clips] of Object.entries(state.classes)) {
    const remove = el("button", { title: `remove class ${name}`, textContent: "remove class" });
    remove.onclick = () => act(() => call("POST", "api/classes/delete", { name }));
    const items = clips.map((clip) => {
      const drop = el("button", { title: `remove ${clip}`, textContent: "×" });
      drop.onclick = () => act(() => call("POST", "api/clips/delete", { class: name, name: clip }));
      return el("li", {}, clip, drop);
    });
    const upload = el("input", { type: "file", multiple: true, accept: "audio/*,video/*" });
    upload.onchange = () => uploadClips(name, upload);
    const record = el("button", { className: "record", textContent: "Record" });
    record.onclick = () => recordInto(record, (file) => addClips(name, [file]));
    const card = el("div", { className: "class" },
      el("h3", {}, el("span", {}, `${name} (${clips.length} clip${clips.length === 1 ? "" : "s"})`), remove),
      el("ul", { className: "clips" }, ...items),
      el("label", { className: "file" }, "Add clips ", upload), record);
    card.dataset.class = name;
    list.append(card);
  }
  const clf = state.classifier;
  $("classifier-info").textContent = clf
    ? `${clf.method} on ${clf.classes.length} classes (${clf.classes.join(", ")}); prompt "${clf.prompt}".`
    : "None yet: fit one, or load a file.";
  $("download").hidden = !clf;
  $("interpretation").hidden = !clf;
  $("scanning").hidden = !clf;
  if (JSON.stringify(clf) !== shownClassifier) { // a new fit or file: its own rejection rate, no old result
    shownClassifier = JSON.stringify(clf);
    $("reject-controls").hidden = !(clf && clf.reject_rate !== null);
    if (clf && clf.reject_rate !== null) $("reject-rate").value = Math.round(100 * clf.reject_rate);
    last = null;
    $("result").hidden = true;
    updateThreshold();
    scanControls(clf);
  }
}

async function act(action, done) {
  try {
    render(await action());
    if (done !== null) say(done || "", "ok");
  } catch (error) {
    say(error.message, "error");
  }
}

async function addClips(name, files) {
  const failed = [];
  for (const file of files) {
    try {
      render(await call("POST", withName("api/clips", { class: name, name: file.name }), file));
    } catch (error) {
      failed.push(error.message);
    }
  }
  const added = files.length - failed.length;
  if (failed.length) say(`${added} clip(s) added to ${name}; not added:\n${failed.join("\n")}`, "error");
  else say(`${added} clip(s) added to ${name}.`, "ok");
}

function uploadClips(name, input) {
  const files = Array.from(input.files);
  input.value = "";
  return addClips(name, files);
}

async function fit() {
  const button = $("fit");
  const bar = $("fit-progress");
  button.disabled = true;
  bar.hidden = false;
  $("fit-status").textContent = "starting…";
  const poll = setInterval(async () => {
    try {
      const p = await call("GET", "api/progress");
      if (p.stage === "idle") return;
      bar.max = Math.max(p.total, 1);
      bar.value = p.done;
      $("fit-status").textContent = p.stage === "extracting"
        ? `extracting features: ${p.done} / ${p.total} clips` : "fitting…";
    } catch (error) { /* the fit request reports errors */ }
  }, 300);
  try {
    const reply = await call("POST", "api/fit");
    render(reply);
    const f = reply.fit;
    $("fit-status").textContent = `fitted ${f.method} on ${f.clips} clips.` + (f.held_out_accuracy === null ? ""
      : ` Held-out accuracy ${(100 * f.held_out_accuracy).toFixed(0)}% (each clip classified without it).`);
    say(f.warnings.length ? `Fitted, with warnings:\n${f.warnings.join("\n")}` : "Fitted.", "ok");
    showInterpretation();
  } catch (error) {
    $("fit-status").textContent = "fit failed.";
    say(error.message, "error");
  } finally {
    clearInterval(poll);
    bar.hidden = true;
    button.disabled = false;
  }
}

async function classify(file) {
  $("fit").disabled = true;
  try {
    last = await call("POST", withName("api/classify", { name: file.name }), file);
    showResult();
    say("", "ok");
  } catch (error) {
    say(error.message, "error");
  } finally {
    $("fit").disabled = false;
  }
}

// The label shown: the most probable class, or "unknown" when rejection is on and the clip's
// open-set score is below the threshold of the chosen rate (the rule of `calm predict --reject`).
function shownLabel(reply) {
  if (!$("reject").checked || reply.score === null || threshold === null) return reply.top;
  return reply.score < threshold ? "unknown" : reply.top;
}

function showResult() {
  if (!last) return;
  $("result-name").textContent = last.name;
  $("result-label").textContent = shownLabel(last);
  $("result-score").textContent = $("reject").checked && last.score !== null
    ? `(open-set score ${last.score.toFixed(2)}; ` + (threshold === null
      ? "with this few clips, none is turned away at this rate)" : `unknown below ${threshold.toFixed(2)})`) : "";
  $("result-atypical").hidden = !(last.typicality !== null && last.typicality <= 0.1);
  const rows = Object.entries(last.probabilities).sort((a, b) => b[1] - a[1]).map(([label, p]) =>
    el("tr", {}, el("td", {}, label), el("td", {}, p.toFixed(3)),
      el("td", { className: "bar-cell" }, el("div", { className: "bar", style: `width: ${100 * p}%` }))));
  $("result-probabilities").replaceChildren(...rows);
  const sets = last.sets;
  $("result-set").hidden = $("set-summary").hidden = last.set === null || !sets;
  if (last.set !== null && sets) {
    const level = Math.round(100 * sets.coverage);
    $("result-set").textContent = `${level}% prediction set: {${last.set.join(", ")}} (over clips like yours, `
      + `such sets hold the true class ${level} times in 100).`;
    const shots = sets.shots === null ? "" : `At ${sets.shots[0] === sets.shots[1] ? sets.shots[0]
      : `${sets.shots[0]}–${sets.shots[1]}`} shots, `;
    const wide = sets.mean_size >= 1.5;
    $("set-summary").textContent = `${shots}the ${level}% sets hold ${sets.mean_size.toFixed(1)} of ${sets.classes} `
      + `classes on average here (${sets.clips} clip${sets.clips === 1 ? "" : "s"} classified)`
      + (wide ? ": the guarantee holds by naming several classes; add clips to each class to narrow them." : ".");
    $("set-summary").className = wide ? "note wide" : "note";
  }
  $("result").hidden = false;
}

async function updateThreshold() {
  $("reject-rate-value").textContent = `${$("reject-rate").value}%`;
  $("reject-rate-box").hidden = !$("reject").checked;
  const asked = ++thresholdAsked;
  let next = null;
  if ($("reject").checked && state && state.classifier && state.classifier.reject_rate !== null) {
    try {
      next = (await call("GET", withName("api/threshold", { rate: Number($("reject-rate").value) / 100 }))).threshold;
    } catch (error) {
      say(error.message, "error");
    }
  }
  if (asked !== thresholdAsked) return;
  threshold = next;
  showResult();
}

async function showInterpretation() {
  try {
    $("profile").replaceChildren(...drawProfile(await call("GET", "api/profile")));
    $("weights").replaceChildren(...drawWeightMaps(await call("GET", "api/weights"),
      $("interpretation").clientWidth || 1200));
  } catch (error) {
    say(error.message, "error");
  }
}

// Microphone recording: raw samples from the Web Audio API, written as a 16-bit WAV file
// (browsers record compressed formats otherwise, which would need the `video` extra to decode).
let recorder = null;

async function recordInto(button, use) {
  if (recorder) {
    const file = await recorder.stop();
    recorder = null;
    document.querySelectorAll(".record").forEach((b) => { b.classList.remove("on"); b.textContent = "Record"; });
    return use(file);
  }
  if (!navigator.mediaDevices) {
    say("Recording needs the page on localhost (or https): the browser allows the microphone nowhere else.", "error");
    return;
  }
  try {
    recorder = await startRecording();
    button.classList.add("on");
    button.textContent = "Stop";
  } catch (error) {
    say(`cannot record: ${error.message}`, "error");
  }
}

async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  const node = context.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  node.onaudioprocess = (event) => chunks.push(new Float32Array(event.inputBuffer.getChannelData(0)));
  source.connect(node);
  node.connect(context.destination);
  return {
    async stop() {
      node.disconnect();
      source.disconnect();
      stream.getTracks().forEach((track) => track.stop());
      await context.close();
      const stamp = new Date().toISOString().replace(/[:.]/g, "-");
      return new File([wav(chunks, context.sampleRate)], `recording-${stamp}.wav`, { type: "audio/wav" });
    },
  };
}

function wav(chunks, rate) {
  const n = chunks.reduce((sum, c) => sum + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * n, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const x of chunk) {
      view.setInt16(offset, Math.max(-1, Math.min(1, x)) * 0x7fff, true);
      offset += 2;
    }
  }
  return view.buffer;
}

window.addEventListener("DOMContentLoaded", async () => {
  $("class-form").onsubmit = (event) => {
    event.preventDefault();
    const name = $("new-class").value;
    $("new-class").value = "";
    act(() => call("POST", "api/classes", { name }));
  };
  $("folder-form").onsubmit = (event) => {
    event.preventDefault();
    act(async () => {
      const reply = await call("POST", "api/folder", { path: $("folder").value });
      say(`${reply.added} clip(s) added.`, "ok");
      return reply;
    }, null);
  };
  $("fit").onclick = fit;
  $("classify-file").onchange = () => {
    const file = $("classify-file").files[0];
    $("classify-file").value = "";
    if (file) classify(file);
  };
  $("classify-record").onclick = () => recordInto($("classify-record"), classify);
  $("reject").onchange = updateThreshold;
  $("reject-rate").oninput = updateThreshold;
  $("load-file").onchange = async () => {
    const file = $("load-file").files[0];
    $("load-file").value = "";
    if (!file) return;
    await act(() => call("POST", withName("api/classifier", { name: file.name }), file), `Loaded ${file.name}.`);
    if (state.classifier) showInterpretation();
  };
  await act(() => call("GET", "api/state"));
  if (state && state.classifier) showInterpretation();
});
