// The "scan a long file" panel of `calm app`: choose a recording (an upload, or a file under the
// app's folder), scan it with the classifier, draw its timeline and list its events.
"use strict";

const MAX_ROWS = 1000; // events listed in the page; the downloads hold them all

function duration(seconds) {
  const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${Math.round(s)} s` : `${s.toFixed(1)} s`;
}

// The panel's controls for a new classifier: its classes as background choices, rejection if it can.
function scanControls(clf) {
  const select = $("scan-background");
  const kept = select.value;
  select.replaceChildren(el("option", { value: "", textContent: "none" }),
    ...(clf ? clf.classes : []).map((name) => el("option", { value: name, textContent: name })));
  if (clf && clf.classes.includes(kept)) select.value = kept;
  $("scan-reject-box").hidden = !(clf && clf.reject_rate !== null);
  if ($("scan-reject-box").hidden) $("scan-reject").checked = false;
}

async function chooseLong(request) {
  try {
    const file = await request();
    $("scan-file").textContent = `${file.name} (${duration(file.seconds)})`;
    $("scan-run").disabled = false;
    say("", "ok");
  } catch (error) {
    say(error.message, "error");
  }
}

function optionalNumber(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

async function runScan() {
  const button = $("scan-run"), bar = $("scan-progress");
  button.disabled = $("fit").disabled = true;
  bar.hidden = false;
  $("scan-status").textContent = "starting…";
  const poll = setInterval(async () => {
    try {
      const p = await call("GET", "api/progress");
      if (p.stage !== "scanning") return;
      bar.max = Math.max(p.total, 1);
      bar.value = p.done;
      $("scan-status").textContent = `${duration(p.done)} of ${duration(p.total)} scanned`;
    } catch (error) { /* the scan request reports errors */ }
  }, 400);
  try {
    const scan = await call("POST", "api/scan", {
      threshold: Number($("scan-threshold").value), background: $("scan-background").value || null,
      reject: $("scan-reject").checked, window: optionalNumber("scan-window"), hop: optionalNumber("scan-hop"),
    });
    showScan(scan);
    $("scan-status").textContent = "";
    say("", "ok");
  } catch (error) {
    $("scan-status").textContent = "scan failed.";
    say(error.message, "error");
  } finally {
    clearInterval(poll);
    bar.hidden = true;
    button.disabled = $("fit").disabled = false;
  }
}

function showScan(scan) {
  const n = scan.events.length;
  $("scan-summary").textContent = `${scan.file}: ${n} event${n === 1 ? "" : "s"} in ${duration(scan.seconds)} `
    + `(${scan.windows} windows of ${scan.window.toFixed(2)} s every ${scan.hop.toFixed(2)} s, threshold `
    + `${scan.threshold}${scan.background ? `, background class ${scan.background}` : ""}`
    + `${scan.rejected === null ? "" : `, ${scan.rejected} window(s) unlike every class left out`}).`;
  $("scan-timeline").replaceChildren(...drawTimeline(scan, $("scanning").clientWidth - 40 || 1200));
  const head = el("tr", {}, ...["onset (s)", "offset (s)", "label", "peak", "mean"].map(
    (name) => el("th", { textContent: name })));
  const rows = scan.events.slice(0, MAX_ROWS).map((e) => el("tr", {},
    ...[e.onset.toFixed(2), e.offset.toFixed(2), e.label, e.peak.toFixed(3), e.mean.toFixed(3)].map(
      (value) => el("td", { textContent: value }))));
  if (n > MAX_ROWS) {
    rows.push(el("tr", {}, el("td", { colSpan: 5, textContent: `… the first ${MAX_ROWS} of ${n}; the downloads `
      + "hold them all" })));
  }
  $("scan-events").replaceChildren(head, ...rows);
  $("scan-result").hidden = false;
}

window.addEventListener("DOMContentLoaded", () => {
  $("scan-upload").onchange = () => {
    const file = $("scan-upload").files[0];
    $("scan-upload").value = "";
    if (file) {
      $("scan-file").textContent = `uploading ${file.name}…`;
      chooseLong(() => call("POST", withName("api/scan/file", { name: file.name }), file));
    }
  };
  $("scan-pick-form").onsubmit = (event) => {
    event.preventDefault();
    chooseLong(() => call("POST", "api/scan/pick", { path: $("scan-pick").value }));
  };
  $("scan-form").onsubmit = (event) => {
    event.preventDefault();
    runScan();
  };
});
