// tierflow's charts: bars with shares, a scatter with quadrant lines, daily lines.
// Plain SVG, no dependencies, served from the installed package (works offline).
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  // Best tier first: strong to pale, distinguishable in print and for most colour vision.
  const PALETTE = ["#1f4e9c", "#2f8f83", "#e0a526", "#c2410c", "#7c3aed", "#64748b",
                   "#0ea5e9", "#a16207"];

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(width, height, title) {
    const root = el("svg", {viewBox: `0 0 ${width} ${height}`, width: "100%",
                            role: "img", "aria-label": title});
    root.appendChild(el("title", {}, title));
    return root;
  }

  function fmt(n) {
    if (n === null || n === undefined) return "–";
    const abs = Math.abs(n);
    if (abs >= 1e6) return (n / 1e6).toFixed(abs >= 1e7 ? 0 : 1) + "M";
    if (abs >= 1e4) return (n / 1e3).toFixed(0) + "k";
    return Number.isInteger(n) ? n.toLocaleString("en") : n.toFixed(1);
  }

  function ticks(max, count) {
    if (max <= 0) return [0];
    const raw = max / count;
    const step = Math.pow(10, Math.floor(Math.log10(raw)));
    const nice = [1, 2, 2.5, 5, 10].map(m => m * step).find(s => s >= raw) || raw;
    const out = [];
    for (let v = 0; v <= max + 1e-9; v += nice) out.push(v);
    return out;
  }

  function quantile(values, q) {
    if (!values.length) return 0;
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  // Horizontal bars, best tier on top: [{label, count, share}].
  function bars(container, items, title) {
    const rowH = 26, left = 96, right = 104, width = 330;
    const height = items.length * rowH + 8;
    const root = svg(width, height, title);
    root.dataset.chart = "bars";
    root.dataset.items = String(items.length);
    const max = Math.max(1, ...items.map(i => i.count));
    items.forEach((item, i) => {
      const y = 4 + i * rowH;
      const w = (width - left - right) * item.count / max;
      root.appendChild(el("text", {x: left - 6, y: y + 16, "text-anchor": "end"}, item.label));
      const bar = el("rect", {x: left, y: y + 3, width: Math.max(w, item.count ? 2 : 0),
                              height: rowH - 8, rx: 2, fill: PALETTE[i % PALETTE.length]});
      bar.appendChild(el("title", {}, `${item.label}: ${item.count.toLocaleString("en")}`));
      root.appendChild(bar);
      root.appendChild(el("text", {x: left + w + 6, y: y + 16},
        `${item.count.toLocaleString("en")} · ${(100 * item.share).toFixed(1)}%`));
    });
    container.replaceChildren(root);
    return root;
  }

  // Dots coloured by tier, quadrant lines at `lines`, a label in each quadrant.
  // opts: {points: [[x, y, tier, id]], tiers: [{name, label}], lines: {x, y},
  //        quadrants: {high_high: {label}, ...}, xLabel, yLabel, onPick(id)}
  function scatter(container, opts) {
    const width = 760, height = 430, m = {l: 64, r: 20, t: 16, b: 44};
    const root = svg(width, height, `${opts.yLabel} against ${opts.xLabel}`);
    root.dataset.chart = "scatter";
    const pts = opts.points.filter(p => p[0] !== null && p[1] !== null);
    // The top 2% would squash everyone else into a corner: they are drawn at the edge.
    const xMax = Math.max(opts.lines.x * 1.6, quantile(pts.map(p => p[0]), 0.98) * 1.05, 1);
    const yMax = Math.max(opts.lines.y * 1.6, quantile(pts.map(p => p[1]), 0.98) * 1.05, 1);
    const sx = v => m.l + (width - m.l - m.r) * Math.min(v, xMax) / xMax;
    const sy = v => height - m.b - (height - m.t - m.b) * Math.min(v, yMax) / yMax;
    const axis = el("g", {class: "axis"});
    for (const v of ticks(xMax, 6)) {
      axis.appendChild(el("line", {class: "grid", x1: sx(v), x2: sx(v), y1: m.t, y2: height - m.b}));
      axis.appendChild(el("text", {x: sx(v), y: height - m.b + 16, "text-anchor": "middle"}, fmt(v)));
    }
    for (const v of ticks(yMax, 5)) {
      axis.appendChild(el("line", {class: "grid", x1: m.l, x2: width - m.r, y1: sy(v), y2: sy(v)}));
      axis.appendChild(el("text", {x: m.l - 6, y: sy(v) + 4, "text-anchor": "end"}, fmt(v)));
    }
    axis.appendChild(el("line", {x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b}));
    axis.appendChild(el("line", {x1: m.l, x2: m.l, y1: m.t, y2: height - m.b}));
    axis.appendChild(el("text", {x: (m.l + width - m.r) / 2, y: height - 6, "text-anchor": "middle"},
                        opts.xLabel));
    axis.appendChild(el("text", {x: 14, y: (m.t + height - m.b) / 2, "text-anchor": "middle",
                                 transform: `rotate(-90 14 ${(m.t + height - m.b) / 2})`}, opts.yLabel));
    root.appendChild(axis);
    const colour = {};
    opts.tiers.forEach((t, i) => { colour[t.name] = PALETTE[i % PALETTE.length]; });
    const dots = el("g", {"fill-opacity": "0.55"});
    for (const [x, y, tier, id] of pts) {
      const dot = el("circle", {cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 3,
                                fill: colour[tier] || "#999"});
      dot.appendChild(el("title", {}, `${id}: ${tier} (${fmt(x)}, ${fmt(y)})`));
      if (opts.onPick) dot.addEventListener("click", () => opts.onPick(id));
      dots.appendChild(dot);
    }
    root.dataset.points = String(pts.length);
    root.appendChild(dots);
    const qx = sx(opts.lines.x), qy = sy(opts.lines.y);
    root.appendChild(el("line", {class: "quadrant-line", x1: qx, x2: qx, y1: m.t, y2: height - m.b}));
    root.appendChild(el("line", {class: "quadrant-line", x1: m.l, x2: width - m.r, y1: qy, y2: qy}));
    const place = {
      high_high: [width - m.r - 8, m.t + 16, "end"], low_high: [m.l + 8, m.t + 16, "start"],
      high_low: [width - m.r - 8, height - m.b - 8, "end"],
      low_low: [m.l + 8, height - m.b - 8, "start"],
    };
    for (const [key, [x, y, anchor]] of Object.entries(place)) {
      const q = opts.quadrants[key];
      if (!q || !q.label) continue;
      root.appendChild(el("text", {class: "quadrant-label", x, y, "text-anchor": anchor},
                          `${q.label} · ${q.count.toLocaleString("en")}`));
    }
    container.replaceChildren(root, legend(opts.tiers, colour));
    return root;
  }

  function legend(tiers, colour) {
    const box = document.createElement("div");
    box.className = "legend";
    for (const t of tiers) {
      const item = document.createElement("span");
      item.style.setProperty("--swatch", colour[t.name]);
      item.textContent = t.label;
      box.appendChild(item);
    }
    return box;
  }

  // Daily series as lines: opts {days: [...], series: [{name, values, colour}]}.
  function lines(container, opts) {
    const width = 760, height = 250, m = {l: 48, r: 16, t: 12, b: 40};
    const root = svg(width, height, opts.title);
    root.dataset.chart = "lines";
    const n = opts.days.length;
    const max = Math.max(1, ...opts.series.flatMap(s => s.values));
    const sx = i => m.l + (width - m.l - m.r) * (n > 1 ? i / (n - 1) : 0.5);
    const sy = v => height - m.b - (height - m.t - m.b) * v / max;
    const axis = el("g", {class: "axis"});
    for (const v of ticks(max, 4)) {
      axis.appendChild(el("line", {class: "grid", x1: m.l, x2: width - m.r, y1: sy(v), y2: sy(v)}));
      axis.appendChild(el("text", {x: m.l - 6, y: sy(v) + 4, "text-anchor": "end"}, fmt(v)));
    }
    const every = Math.ceil(n / 8);
    opts.days.forEach((d, i) => {
      if (i % every === 0 || (i === n - 1 && i % every >= every / 2)) {
        axis.appendChild(el("text", {x: sx(i), y: height - m.b + 16, "text-anchor": "middle"},
                            d.slice(5)));
      }
    });
    root.appendChild(axis);
    let drawn = 0;
    for (const s of opts.series) {
      const path = s.values.map((v, i) => `${i ? "L" : "M"}${sx(i).toFixed(1)},${sy(v).toFixed(1)}`);
      root.appendChild(el("path", {d: path.join(""), fill: "none", stroke: s.colour,
                                   "stroke-width": 2}));
      s.values.forEach((v, i) => {
        if (!v) return;
        const dot = el("circle", {cx: sx(i), cy: sy(v), r: 2.5, fill: s.colour});
        dot.appendChild(el("title", {}, `${opts.days[i]}: ${v.toLocaleString("en")} ${s.name}`));
        root.appendChild(dot);
        drawn += 1;
      });
    }
    root.dataset.points = String(drawn);
    const key = document.createElement("div");
    key.className = "legend";
    for (const s of opts.series) {
      const item = document.createElement("span");
      item.style.setProperty("--swatch", s.colour);
      item.textContent = `${s.name}: ${s.values.reduce((a, b) => a + b, 0).toLocaleString("en")}`;
      key.appendChild(item);
    }
    container.replaceChildren(root, key);
    return root;
  }

  return {bars, scatter, lines, PALETTE};
})();
