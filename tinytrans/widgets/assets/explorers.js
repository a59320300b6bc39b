/* tinytrans explorers: shared helpers for the static (kernel-less) explorables.
   Plain modern JavaScript (ES2020: BigInt), no libraries, no network. Each explorable's inline script holds this file, then
   its own view file, then calls TinyTrans.mount(kind, rootId). Redefinition is harmless. */
var TinyTrans = (window.TinyTrans = window.TinyTrans || {});
TinyTrans.views = TinyTrans.views || {};

// ColorBrewer palettes (colour-blind safe), identical to tinytrans/widgets/render.py.
TinyTrans.BLUES = ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"];
TinyTrans.PUOR = ["#7f3b08", "#b35806", "#e08214", "#fdb863", "#fee0b6", "#f7f7f7", "#d8daeb", "#b2abd2", "#8073ac", "#542788", "#2d004b"];
TinyTrans.CATEGORICAL = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"];
TinyTrans.MASKED = "#d9d9d9";

TinyTrans.mount = function (kind, rootId) {
  var root = document.getElementById(rootId);
  if (!root || root.getAttribute("data-mounted")) return;
  var data = JSON.parse(root.querySelector("script.tt-data").textContent);
  var target = root.querySelector(".tt-mount");
  target.innerHTML = "";
  try {
    TinyTrans.views[kind](target, data, root);
    root.setAttribute("data-mounted", "1");
  } catch (err) {
    target.appendChild(TinyTrans.h("div", { class: "tt-error", "data-testid": "tt-error" }, "Error: " + err));
    throw err;
  }
};

/* ---------------------------------------------------------------- DOM helpers */
TinyTrans.h = function (tag, attrs, children) {
  return TinyTrans._build(document.createElement(tag), attrs, children);
};
TinyTrans.s = function (tag, attrs, children) {
  return TinyTrans._build(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children);
};
TinyTrans._build = function (node, attrs, children) {
  var key;
  for (key in attrs || {}) {
    if (attrs[key] === null || attrs[key] === undefined || attrs[key] === false) continue;
    if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), attrs[key]);
    else if (key === "style" && typeof attrs[key] === "object") Object.assign(node.style, attrs[key]);
    else node.setAttribute(key, attrs[key] === true ? "" : attrs[key]);
  }
  TinyTrans.append(node, children);
  return node;
};
TinyTrans.append = function (node, children) {
  if (children === null || children === undefined) return node;
  if (!Array.isArray(children)) children = [children];
  children.forEach(function (child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) TinyTrans.append(node, child);
    else node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  });
  return node;
};
TinyTrans.clear = function (node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
};

/* ---------------------------------------------------------------- numbers and colours */
/* Python's number formatting, exactly: a double is an integer times a power of two, so
   BigInt arithmetic decides ties, which Python rounds to even (toFixed would round up). */
TinyTrans._exact = function (x) {
  var view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  var hi = view.getUint32(0), lo = view.getUint32(4), bits = (hi >>> 20) & 0x7ff;
  var mant = (BigInt(hi & 0xfffff) << BigInt(32)) | BigInt(lo);
  if (bits === 0) return [mant, -1074];
  return [mant | (BigInt(1) << BigInt(52)), bits - 1075];
};
// round(|x| * 10^shift), ties to even, as a BigInt.
TinyTrans._scaledRound = function (x, shift) {
  var ex = TinyTrans._exact(x), ten = BigInt(10), one = BigInt(1), two = BigInt(2);
  var num = ex[0], den = one;
  if (ex[1] >= 0) num = num << BigInt(ex[1]); else den = den << BigInt(-ex[1]);
  if (shift >= 0) num = num * ten ** BigInt(shift); else den = den * ten ** BigInt(-shift);
  var q = num / den, rem = num - q * den;
  if (two * rem > den || (two * rem === den && q % two === one)) q += one;
  return q;
};
// Python's f"{x:.{places}f}".
TinyTrans.fixed = function (x, places) {
  var digits = TinyTrans._scaledRound(x, places).toString();
  if (places > 0) {
    digits = digits.padStart(places + 1, "0");
    digits = digits.slice(0, -places) + "." + digits.slice(-places);
  }
  return (x < 0 || Object.is(x, -0) ? "-" : "") + digits;
};
// |x| rounded to `sig` significant digits: [digit string, decimal exponent of the first digit].
TinyTrans.roundSig = function (x, sig) {
  var exp = parseInt(Math.abs(x).toExponential(20).split("e")[1], 10);
  var q = TinyTrans._scaledRound(x, sig - 1 - exp).toString();
  if (q.length > sig) { q = q.slice(0, sig); exp += 1; }  // 9.96 -> 10.0
  return [q, exp];
};
// Python's format(x, ".{digits}g").
TinyTrans.pyG = function (x, digits) {
  if (x === 0) return "0";
  if (!isFinite(x)) return Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
  var r = TinyTrans.roundSig(x, digits), q = r[0], exp = r[1], sign = x < 0 ? "-" : "", body;
  var strip = function (t) { return t.indexOf(".") >= 0 ? t.replace(/0+$/, "").replace(/\.$/, "") : t; };
  if (exp < -4 || exp >= digits) {
    return sign + strip(q[0] + "." + q.slice(1)) + "e" + (exp < 0 ? "-" : "+") + String(Math.abs(exp)).padStart(2, "0");
  }
  if (exp >= 0) body = q.slice(0, exp + 1) + "." + q.slice(exp + 1);
  else body = "0." + "0".repeat(-exp - 1) + q;
  return sign + strip(body);
};
// Python's f"{x:.{digits - 1}e}" mantissa and exponent, e.g. ["3.15", 23].
TinyTrans.pyE = function (x, digits) {
  var r = TinyTrans.roundSig(x, digits);
  return [(x < 0 ? "-" : "") + r[0][0] + (digits > 1 ? "." + r[0].slice(1) : ""), r[1]];
};
// render.fmt: fixed-point, "n/a" / "inf" / "-inf" for the special values.
TinyTrans.fmt = function (value, digits) {
  if (digits === undefined) digits = 3;
  if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
  if (value === Infinity) return "inf";
  if (value === -Infinity) return "-inf";
  return TinyTrans.fixed(value, digits);
};
TinyTrans.intComma = function (n) {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
};
TinyTrans._rgb = function (hex) {
  return [parseInt(hex.slice(1, 3), 16), parseInt(hex.slice(3, 5), 16), parseInt(hex.slice(5, 7), 16)];
};
TinyTrans.colour = function (value, lo, hi, palette) {
  palette = palette || TinyTrans.BLUES;
  if (value === null || value === undefined || !isFinite(value)) return TinyTrans.MASKED;
  var span = hi - lo;
  var t = span <= 0 ? 0 : Math.min(1, Math.max(0, (value - lo) / span));
  var x = t * (palette.length - 1);
  var i = Math.min(Math.floor(x), palette.length - 2);
  var f = x - i;
  var a = TinyTrans._rgb(palette[i]), b = TinyTrans._rgb(palette[i + 1]);
  return "#" + [0, 1, 2].map(function (k) {
    var v = Math.round(a[k] + (b[k] - a[k]) * f);
    return (v < 16 ? "0" : "") + v.toString(16);
  }).join("");
};
TinyTrans.ink = function (hex) {
  var c = TinyTrans._rgb(hex);
  return 0.2126 * c[0] / 255 + 0.7152 * c[1] / 255 + 0.0722 * c[2] / 255 > 0.5 ? "#000000" : "#ffffff";
};
TinyTrans.gradient = function (palette, lo, hi, name) {
  return TinyTrans.h("span", {}, [name + ": " + lo + " ",
    TinyTrans.h("i", { class: "tt-ramp", style: { background: "linear-gradient(90deg," + palette.join(",") + ")" } }),
    " " + hi]);
};

/* ---------------------------------------------------------------- controls */
// Each control calls onchange(value) and carries a data-testid for the browser tests.
TinyTrans.select = function (label, options, value, onchange, testid) {
  var sel = TinyTrans.h("select", { "data-testid": testid });
  options.forEach(function (opt) {
    var o = Array.isArray(opt) ? opt : [opt, opt];
    var node = TinyTrans.h("option", { value: String(o[0]) }, String(o[1]));
    if (String(o[0]) === String(value)) node.selected = true;
    sel.appendChild(node);
  });
  sel.addEventListener("change", function () { onchange(sel.value); });
  return TinyTrans.h("label", {}, [label, sel]);
};
TinyTrans.range = function (label, min, max, step, value, onchange, testid, digits) {
  var out = TinyTrans.h("output", {}, TinyTrans.fmt(value, digits === undefined ? 2 : digits));
  var input = TinyTrans.h("input", { type: "range", min: min, max: max, step: step, value: value, "data-testid": testid });
  input.addEventListener("input", function () {
    out.textContent = TinyTrans.fmt(Number(input.value), digits === undefined ? 2 : digits);
    onchange(Number(input.value));
  });
  return TinyTrans.h("label", {}, [label, input, out]);
};
TinyTrans.number = function (label, min, max, step, value, onchange, testid) {
  var input = TinyTrans.h("input", { type: "number", min: min, max: max, step: step, value: value, "data-testid": testid });
  input.addEventListener("change", function () {
    var v = Number(input.value);
    if (!isFinite(v)) return;
    onchange(v);
  });
  return TinyTrans.h("label", {}, [label, input]);
};
TinyTrans.checkbox = function (label, value, onchange, testid) {
  var input = TinyTrans.h("input", { type: "checkbox", "data-testid": testid });
  input.checked = !!value;
  input.addEventListener("change", function () { onchange(input.checked); });
  return TinyTrans.h("label", {}, [input, label]);
};

/* ---------------------------------------------------------------- heatmap */
// Cell size in px (render.default_cell): two maps of 24 tokens fit side by side.
TinyTrans.defaultCell = function (T) { return Math.max(8, Math.min(18, Math.floor(250 / Math.max(T, 1)))); };
// get(q, k) -> number (or null when masked). opts: kind ("weights"|"scores"), mask, cell,
// labels, title, vmax, onhover(q, k, value), onrow(q).
TinyTrans.heatmap = function (get, tokens, opts) {
  var S = TinyTrans.s, T = tokens.length;
  var cell = opts.cell || TinyTrans.defaultCell(T);
  var font = Math.min(11, cell + 1);
  var maxLen = Math.max.apply(null, tokens.map(function (t) { return t.length; }).concat([1]));
  var labelW = Math.floor(maxLen * 7.2) + 10;
  var left = opts.labels === false ? 0 : labelW;
  var top = opts.labels === false ? 0 : (maxLen > 1 ? labelW : 16);
  if (opts.title) top += 18;
  var size = cell * T, lo, hi, palette, q, k;
  var mask = opts.mask !== false;
  if (opts.kind === "scores") {
    var m = opts.vmax || 0;
    if (!m) for (q = 0; q < T; q++) for (k = 0; k < T; k++) {
      if (mask && k > q) continue;
      m = Math.max(m, Math.abs(get(q, k)));
    }
    m = m || 1; lo = -m; hi = m; palette = TinyTrans.PUOR;
  } else { lo = 0; hi = opts.vmax || 1; palette = TinyTrans.BLUES; }
  var svg = S("svg", { class: "tt-heatmap", "data-testid": opts.testid || "tt-heatmap", "data-kind": opts.kind || "weights",
    width: left + size + 2, height: top + size + 2, role: "img" });
  if (opts.title) svg.appendChild(S("text", { class: "tt-title", x: left, y: 13 }, opts.title));
  var rowLabels = [], colLabels = [], labelGroup = svg;
  if (opts.labels !== false) {
    labelGroup = svg.appendChild(S("g", { style: "font-size:" + font + "px" }));
    tokens.forEach(function (tok, i) {
      var x = left + i * cell + cell / 2;
      colLabels.push(labelGroup.appendChild(maxLen > 1
        ? S("text", { class: "tt-label", x: x.toFixed(1), y: top - 4, transform: "rotate(-60 " + x.toFixed(1) + " " + (top - 4) + ")" }, tok)
        : S("text", { class: "tt-label", x: x.toFixed(1), y: top - 4, "text-anchor": "middle" }, tok)));
      var y = top + i * cell + cell / 2 + font * 0.35;
      var label = S("text", { class: "tt-label", x: left - 4, y: y.toFixed(1), "text-anchor": "end", "data-q": i }, tok);
      if (opts.onrow) label.addEventListener("mouseenter", function () { opts.onrow(i); });
      rowLabels.push(labelGroup.appendChild(label));
    });
  }
  if (mask && T > 1) svg.appendChild(TinyTrans.maskedTriangle(T, left, top, cell));
  var rows = [];
  for (q = 0; q < T; q++) {
    var g = S("g", { class: "tt-row", "data-q": q });
    for (k = 0; k < T; k++) {
      var x0 = left + k * cell, y0 = top + q * cell;
      if (mask && k > q) continue;
      var v = get(q, k);
      var rect = S("rect", { x: x0, y: y0, width: cell, height: cell, fill: TinyTrans.colour(v, lo, hi, palette), "data-k": k });
      if (opts.onhover) rect.addEventListener("mouseenter", TinyTrans._cellHover(opts, q, k, v));
      g.appendChild(rect);
    }
    if (opts.onrow) g.addEventListener("mouseenter", TinyTrans._rowHover(opts, q));
    rows.push(svg.appendChild(g));
  }
  svg.appendChild(S("rect", { x: left, y: top, width: size, height: size, fill: "none", stroke: "#888", "stroke-width": 0.6 }));
  svg.highlight = function (qq) {
    rows.forEach(function (r, i) { r.classList.toggle("tt-hover", i === qq); });
    rowLabels.forEach(function (r, i) { r.classList.toggle("tt-hover", i === qq); });
    colLabels.forEach(function (r, i) { r.classList.toggle("tt-hover", i <= qq && get(qq, i) >= 0.1 && opts.kind !== "scores"); });
  };
  return svg;
};
// The causal mask as one hatched staircase polygon (render.py draws the same).
TinyTrans._patterns = TinyTrans._patterns || 0;
TinyTrans.maskedTriangle = function (T, left, top, cell) {
  var S = TinyTrans.s, id = "tt-hatch-js" + (TinyTrans._patterns++) + "-" + Math.floor(Math.random() * 1e9);
  var size = T * cell, pts = [[size, 0], [size, (T - 1) * cell]];
  for (var j = T - 1; j > 0; j--) pts.push([j * cell, j * cell], [j * cell, (j - 1) * cell]);
  var pattern = S("pattern", { id: id, width: 5, height: 5, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, [
    S("rect", { width: 5, height: 5, fill: "#f2f2f2" }),
    S("line", { x1: 0, y1: 0, x2: 0, y2: 5, stroke: "#c4c4c4", "stroke-width": 1.6 })]);
  var poly = S("polygon", { class: "tt-masked", fill: "url(#" + id + ")",
    points: pts.map(function (p) { return (left + p[0]) + "," + (top + p[1]); }).join(" ") },
    S("title", {}, "masked: a query cannot see future keys"));
  return S("g", {}, [S("defs", {}, pattern), poly]);
};
TinyTrans._cellHover = function (opts, q, k, v) { return function () { opts.onhover(q, k, v); }; };
TinyTrans._rowHover = function (opts, q) { return function () { opts.onrow(q); }; };

/* ---------------------------------------------------------------- seeded random numbers */
// Mulberry32, bit-identical to tinytrans.widgets.data.mulberry32.
TinyTrans.mulberry32 = function (seed) {
  var state = seed >>> 0;
  return function () {
    state = (state + 0x6d2b79f5) >>> 0;
    var t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
};
// Counts of n draws from probs by inverse CDF (tinytrans.widgets.data.sample_counts).
TinyTrans.sampleCounts = function (probs, n, seed) {
  var total = 0, i, last = -1;
  for (i = 0; i < probs.length; i++) { total += probs[i]; if (probs[i] > 0) last = i; }
  var cdf = [], acc = 0;
  for (i = 0; i < probs.length; i++) { acc += probs[i] / total; cdf.push(acc); }
  var rand = TinyTrans.mulberry32(seed), counts = probs.map(function () { return 0; });
  for (var draw = 0; draw < n; draw++) {
    var u = rand(), index = last;
    for (i = 0; i < cdf.length; i++) if (u < cdf[i]) { index = i; break; }
    index = Math.min(index, last);
    while (probs[index] === 0) index++;
    counts[index]++;
  }
  return counts;
};
