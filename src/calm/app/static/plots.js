// The plots of `calm app`, drawn as SVG with their scales: the layer profile and the head x class
// weight maps (sized to the page, every head with its value on hover).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function svg(tag, attributes, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function svgText(x, y, text, attributes) {
  return svg("text", { x, y, ...attributes }, text);
}

function colour(share) {
  const t = Math.min(Math.max(share, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(t), VIRIDIS.length - 2);
  const mix = VIRIDIS[i].map((c, k) => Math.round(c + (t - i) * (VIRIDIS[i + 1][k] - c)));
  return `rgb(${mix.join(",")})`;
}

// A round upper end for an axis: 1, 2 or 5 times a power of ten, at least `value`.
function roundTop(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((top) => top >= value * (1 - 1e-9));
}

function percent(share) {
  return share === 0 ? "0%" : `${(100 * share).toFixed(share < 0.1 ? 1 : 0)}%`;
}

// Every `step`-th of n tick labels, so that labels `size` pixels apart do not overlap.
function tickStep(size) {
  return Math.max(1, Math.ceil(14 / size));
}

// One site's bars: each layer's share of the head weight, on a y scale shared by all sites (`top`).
function profilePlot(site, shares, top) {
  const bar = Math.max(6, Math.min(26, Math.floor(640 / shares.length)));
  const left = 52, pad = 8, height = 110, bottom = 34;
  const width = left + shares.length * bar + pad;
  const y = (share) => pad + height * (1 - share / top);
  const plot = svg("svg", { class: "profile-plot", width, height: pad + height + bottom, role: "img",
    "aria-label": `${site}: share of the head weight per layer` });
  for (const tick of [0, top / 2, top]) {
    plot.append(svg("line", { class: "grid", x1: left - 4, x2: width - pad, y1: y(tick), y2: y(tick) }),
      svgText(left - 7, y(tick) + 4, percent(tick), { "text-anchor": "end" }));
  }
  shares.forEach((share, layer) => {
    const title = `${site} layer ${layer}: ${(100 * share).toFixed(1)}% of the head weight`;
    plot.append(svg("rect", { class: "layer", x: left + layer * bar + 1, y: y(share), width: bar - 2,
      height: height * share / top }, svg("title", {}, title)));
    if (layer % tickStep(bar) === 0) {
      plot.append(svgText(left + (layer + 0.5) * bar, pad + height + 14, String(layer), { "text-anchor": "middle" }));
    }
  });
  plot.append(svgText(left + shares.length * bar / 2, pad + height + 30, "layer",
    { class: "axis", "text-anchor": "middle" }),
    svgText(12, pad + height / 2, "share", { class: "axis", "text-anchor": "middle",
      transform: `rotate(-90 12 ${pad + height / 2})` }));
  return el("figure", {}, el("figcaption", { textContent: site }), plot);
}

function drawProfile(profile) {
  const top = roundTop(Math.max(...Object.values(profile).flat(), 1e-6));
  return Object.entries(profile).map(([site, shares]) => profilePlot(site, shares, top));
}

// One (class, site) map: layers bottom to top, heads left to right, colour on a scale shared by all maps.
function weightMap(name, site, grid, top, budget) {
  const layers = grid.length, heads = grid[0].length;
  const cw = Math.max(4, Math.min(26, Math.floor(budget / heads)));
  const ch = Math.max(5, Math.min(cw, Math.floor(260 / layers)));
  const left = 44, pad = 4, bottom = 32;
  const plot = svg("svg", { class: "weight-map", width: left + heads * cw + pad, height: pad + layers * ch + bottom,
    role: "img", "aria-label": `head weights of ${name} at ${site}` });
  grid.forEach((row, layer) => row.forEach((weight, head) => {
    if (weight === null) return;
    const title = `${name} · ${site} layer ${layer} head ${head}: ${weight.toFixed(4)}`;
    plot.append(svg("rect", { class: "head", x: left + head * cw, y: pad + (layers - 1 - layer) * ch,
      width: cw, height: ch, fill: colour(weight / top) }, svg("title", {}, title)));
  }));
  for (let layer = 0; layer < layers; layer += tickStep(ch)) {
    plot.append(svgText(left - 5, pad + (layers - layer - 0.5) * ch + 4, String(layer), { "text-anchor": "end" }));
  }
  for (let head = 0; head < heads; head += tickStep(cw)) {
    plot.append(svgText(left + (head + 0.5) * cw, pad + layers * ch + 13, String(head), { "text-anchor": "middle" }));
  }
  plot.append(svgText(left + heads * cw / 2, pad + layers * ch + 28, "head",
    { class: "axis", "text-anchor": "middle" }),
    svgText(12, pad + layers * ch / 2, "layer", { class: "axis", "text-anchor": "middle",
      transform: `rotate(-90 12 ${pad + layers * ch / 2})` }));
  return el("figure", {}, el("figcaption", { textContent: `${name} · ${site}` }), plot);
}

// Every class's maps, class by class, site by site, with the colour scale.
function drawWeightMaps(maps, width) {
  const sites = Object.keys(maps.sites);
  const values = sites.flatMap((site) => maps.sites[site].flat(2)).filter((w) => w !== null);
  const top = Math.max(...values, 1e-12);
  const budget = Math.min(520, (width - 24) / sites.length - 70);
  const figures = maps.classes.flatMap((name, c) =>
    sites.map((site) => weightMap(name, site, maps.sites[site][c], top, budget)));
  const gradient = `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map(colour).join(", ")})`;
  const legend = el("p", { className: "legend" }, "head weight: 0 ",
    el("span", { className: "scale", style: `background: ${gradient}` }),
    ` ${top.toFixed(4)} (each class's weights sum to 1)`);
  return [legend, el("div", { className: "maps" }, ...figures)];
}

// Matplotlib's tab10, the colours of calm scan's timeline PNG.
const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];

// A scan's timeline: each class's probability per step (stairs), the events as bands (hover for
// their times and scores), the threshold dashed; time in seconds, or minutes past 10 minutes.
function drawTimeline(scan, width) {
  const classes = Object.keys(scan.timeline.probabilities);
  const times = scan.timeline.times;
  const minutes = scan.seconds > 600, unit = minutes ? 60 : 1;
  const left = 48, right = 12, pad = 8, height = 170, bottom = 36;
  const plotWidth = Math.max(200, width - left - right);
  const end = times[times.length - 1] || 1;
  const x = (t) => left + plotWidth * t / end;
  const y = (p) => pad + height * (1 - p);
  const plot = svg("svg", { class: "timeline", width: left + plotWidth + right, height: pad + height + bottom,
    role: "img", "aria-label": `probability of each class over ${scan.file}` });
  const colourOf = Object.fromEntries(classes.map((name, k) => [name, TAB10[k % TAB10.length]]));
  for (const tick of [0, 0.5, 1]) {
    plot.append(svg("line", { class: "grid", x1: left, x2: left + plotWidth, y1: y(tick), y2: y(tick) }),
      svgText(left - 6, y(tick) + 4, String(tick), { "text-anchor": "end" }));
  }
  for (const e of scan.events) {
    const title = `${e.label}: ${e.onset.toFixed(2)}–${e.offset.toFixed(2)} s, peak ${e.peak.toFixed(2)}, `
      + `mean ${e.mean.toFixed(2)}`;
    plot.append(svg("rect", { class: "event", x: x(e.onset), y: pad, width: Math.max(1, x(e.offset) - x(e.onset)),
      height, fill: colourOf[e.label] }, svg("title", {}, title)));
  }
  classes.forEach((name) => {
    const p = scan.timeline.probabilities[name];
    let d = `M${x(times[0]).toFixed(1)},${y(p[0]).toFixed(1)}`;
    p.forEach((value, i) => {
      d += `V${y(value).toFixed(1)}H${x(times[i + 1]).toFixed(1)}`;
    });
    plot.append(svg("path", { class: "class", d, stroke: colourOf[name] }, svg("title", {}, name)));
  });
  plot.append(svg("line", { class: "threshold", x1: left, x2: left + plotWidth, y1: y(scan.threshold),
    y2: y(scan.threshold) }, svg("title", {}, `threshold ${scan.threshold}`)));
  const step = roundTop(end / unit / 8);
  for (let t = 0; t <= end / unit + 1e-9; t += step) {
    plot.append(svgText(x(t * unit), pad + height + 14, String(+t.toFixed(3)), { "text-anchor": "middle" }));
  }
  plot.append(svgText(left + plotWidth / 2, pad + height + 32, minutes ? "time (min)" : "time (s)",
    { class: "axis", "text-anchor": "middle" }),
    svgText(12, pad + height / 2, "probability", { class: "axis", "text-anchor": "middle",
      transform: `rotate(-90 12 ${pad + height / 2})` }));
  const legend = el("p", { className: "legend" }, ...classes.map((name) =>
    el("span", { className: "key", style: `color: ${colourOf[name]}` }, `━ ${name}  `)));
  return [plot, legend];
}
