/* Sampling explorable. The embedded data holds, per prompt and step, the model's raw
   next-token logits and precomputed beam-search trees; this file re-implements the filters of
   tinytrans.generate (temperature -> top-k -> top-p -> min-p -> renormalise) so the controls
   respond without a kernel. tests/test_browser.py pins every displayed number to Python. */
TinyTrans.sampling = {
  // Softmax with the maximum subtracted first (log-sum-exp safe at tiny temperatures).
  softmax: function (x) {
    var max = -Infinity, i;
    for (i = 0; i < x.length; i++) if (x[i] > max) max = x[i];
    if (max === -Infinity) return x.map(function () { return 0; });
    var e = x.map(function (v) { return v === -Infinity ? 0 : Math.exp(v - max); });
    var sum = e.reduce(function (a, b) { return a + b; }, 0);
    return e.map(function (v) { return v / sum; });
  },
  argmax: function (x) {
    var best = 0;
    for (var i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
    return best;
  },
  // Indices by descending value, ties by lower index.
  ranked: function (x) {
    return x.map(function (_, i) { return i; }).sort(function (a, b) { return x[b] - x[a] || a - b; });
  },
  temperature: function (x, t) {
    if (t === 0) {
      var keep = TinyTrans.sampling.argmax(x);
      return x.map(function (v, i) { return i === keep ? v : -Infinity; });
    }
    return x.map(function (v) { return v / t; });
  },
  topK: function (x, k) {
    if (k >= x.length) return x.slice();
    var keep = {};
    TinyTrans.sampling.ranked(x).slice(0, k).forEach(function (i) { keep[i] = true; });
    return x.map(function (v, i) { return keep[i] ? v : -Infinity; });
  },
  topP: function (x, p) {
    if (p >= 1) return x.slice();
    var order = TinyTrans.sampling.ranked(x);
    var probs = TinyTrans.sampling.softmax(order.map(function (i) { return x[i]; }));
    var out = x.slice(), cum = 0;
    order.forEach(function (i, r) {
      var before = cum;  // probability of the tokens ranked above
      cum += probs[r];
      if (before >= p) out[i] = -Infinity;
    });
    return out;
  },
  minP: function (x, m) {
    if (m === 0) return x.slice();
    var probs = TinyTrans.sampling.softmax(x), threshold = m * Math.max.apply(null, probs);
    return x.map(function (v, i) { return probs[i] < threshold ? -Infinity : v; });
  },
  // Every stage of the pipeline: [{name, logits, probs, kept}], as generate.filter_stages.
  stages: function (logits, cfg) {
    var S = TinyTrans.sampling, out = [], x = logits.slice();
    function push(name) {
      out.push({ name: name, logits: x, probs: S.softmax(x), kept: x.map(function (v) { return v !== -Infinity; }) });
    }
    push("model");
    x = S.temperature(x, cfg.temperature); push("temperature");
    if (cfg.temperature === 0) return out;
    if (cfg.top_k) { x = S.topK(x, cfg.top_k); push("top-k"); }
    if (cfg.top_p !== null && cfg.top_p < 1) { x = S.topP(x, cfg.top_p); push("top-p"); }
    if (cfg.min_p) { x = S.minP(x, cfg.min_p); push("min-p"); }
    return out;
  },
  entropy: function (p) {
    return Math.max(0, -p.reduce(function (acc, v) { return v > 0 ? acc + v * Math.log(v) : acc; }, 0));
  },
};

TinyTrans.views.sampling = function (target, data) {
  var h = TinyTrans.h, s = TinyTrans.s, fmt = TinyTrans.fmt, S = TinyTrans.sampling;
  var d = data.defaults;
  var state = { prompt: 0, step: 0, method: d.method, temperature: d.temperature, top_k: d.top_k,
    top_p: d.top_p, min_p: d.min_p, n: d.n, seed: d.seed, beams: d.beams };
  var controls = h("div", { class: "tt-controls" }), body = h("div", {});
  target.appendChild(controls);
  target.appendChild(body);
  var COLOURS = { base: "#999999", tempered: "#E69F00", final: "#0072B2" };
  var NAMES = { base: "model (T = 1)", tempered: "after temperature", final: "after filters" };

  function step() { return data.prompts[state.prompt].steps[state.step]; }
  function labels() { return step().labels || data.labels; }
  function config() {
    // data.sampling_config: greedy = argmax; beam search ranks by the plain T = 1 log-probabilities.
    if (state.method === "greedy") return { temperature: 0, top_k: 0, top_p: null, min_p: 0 };
    if (state.method === "beam") return { temperature: 1, top_k: 0, top_p: null, min_p: 0 };
    return { temperature: state.temperature, top_k: state.top_k, top_p: state.top_p < 1 ? state.top_p : null, min_p: state.min_p };
  }

  function buildControls() {
    TinyTrans.clear(controls);
    var prompts = data.prompts.map(function (p, i) { return [i, p.text.length > 40 ? p.text.slice(0, 39) + "\u2026" : p.text]; });
    var methods = h("span", { class: "tt-methods" }, ["greedy", "sample", "beam"].map(function (m) {
      var input = h("input", { type: "radio", name: target.parentNode.id + "-method", value: m, "data-testid": "tt-s-method-" + m });
      input.checked = state.method === m;
      input.addEventListener("change", function () { state.method = m; buildControls(); draw(); });
      return h("label", {}, [input, m]);
    }));
    var greedy = state.method !== "sample";
    TinyTrans.append(controls, [
      TinyTrans.select("prompt", prompts, state.prompt, function (v) { state.prompt = Number(v); draw(); }, "tt-s-prompt"),
      TinyTrans.range("step", 0, data.n_steps - 1, 1, state.step, function (v) { state.step = v; draw(); }, "tt-s-step", 0),
      methods,
      greedy ? null : TinyTrans.range("temperature", 0, 2, 0.05, state.temperature, function (v) { state.temperature = v; draw(); }, "tt-s-temperature"),
      greedy ? null : TinyTrans.number("top-k (0 = off)", 0, data.vocab_size, 1, state.top_k, function (v) { state.top_k = Math.max(0, Math.round(v)); draw(); }, "tt-s-topk"),
      greedy ? null : TinyTrans.range("top-p", 0.05, 1, 0.01, state.top_p, function (v) { state.top_p = v; draw(); }, "tt-s-topp"),
      greedy ? null : TinyTrans.range("min-p", 0, 0.5, 0.01, state.min_p, function (v) { state.min_p = v; draw(); }, "tt-s-minp"),
      state.method === "beam" ? TinyTrans.select("beams", data.beam_widths, state.beams, function (v) { state.beams = Number(v); draw(); }, "tt-s-beams")
        : TinyTrans.select("sample N", [0, 20, 100, 200, 500, 1000], state.n, function (v) { state.n = Number(v); draw(); }, "tt-s-n"),
      state.method === "beam" ? null : TinyTrans.number("seed", 0, 1e9, 1, state.seed, function (v) { state.seed = Math.round(v); draw(); }, "tt-s-seed"),
    ]);
  }

  function view() {
    var st = S.stages(step().logits, config()), names = st.map(function (x) { return x.name; });
    var last = st[st.length - 1], pIndex = names.indexOf("top-p");
    var before = pIndex >= 0 ? st[pIndex - 1] : st[1];
    var sorted = before.probs.slice().sort(function (a, b) { return b - a; }), cum = 0;
    var v = { base: st[0].probs, tempered: st[1].probs, final: last.probs, kept: last.kept, stages: names,
      curveStage: before.name, curve: sorted.map(function (x) { cum += x; return cum; }),
      pKept: pIndex >= 0 ? st[pIndex].kept.filter(Boolean).length : null, counts: null };
    v.numKept = v.kept.filter(Boolean).length;
    if (state.method !== "beam" && state.n > 0) v.counts = TinyTrans.sampleCounts(v.final, state.n, state.seed);
    return v;
  }

  function metrics(v) {
    var hb = S.entropy(v.base), hf = S.entropy(v.final);
    var items = [["tt-entropy-base", fmt(hb, 3), "entropy at T = 1 (nats)"], ["tt-entropy", fmt(hf, 3), "entropy after filters (nats)"],
      ["tt-effective", fmt(Math.exp(hf), 2), "effective vocabulary exp(H)"], ["tt-kept", v.numKept + " / " + data.vocab_size, "tokens kept"]];
    return h("div", { class: "tt-metrics" }, items.map(function (it) {
      return h("div", { class: "tt-metric" }, [h("b", { "data-testid": it[0] }, it[1]), h("span", {}, it[2])]);
    }));
  }

  function bar(value, colour, stage, token, dim) {
    return h("td", { class: dim ? "tt-dim" : null, "data-stage": stage, "data-token": token, "data-value": String(value) },
      h("div", { class: "tt-bar" }, [h("i", { style: { width: (Math.max(0, Math.min(1, value)) * 100).toFixed(2) + "%", background: colour } }),
        h("span", {}, fmt(value, 4))]));
  }

  function bars(v) {
    var lab = labels(), top = S.ranked(v.base).slice(0, 12);
    var head = [h("th", {}, "token")].concat(["base", "tempered", "final"].map(function (k) { return h("th", {}, NAMES[k]); }));
    var total = v.counts ? v.counts.reduce(function (a, b) { return a + b; }, 0) : 0;
    if (v.counts) head.push(h("th", {}, "sampled (" + total + ")"));
    var rows = top.map(function (t) {
      var dropped = !v.kept[t];
      var cells = [h("td", { class: "tt-tokcell" }, lab[t])].concat(["base", "tempered", "final"].map(function (k) {
        return bar(v[k][t], COLOURS[k], k, t, dropped && k === "final");
      }));
      if (v.counts) cells.push(bar(v.counts[t] / Math.max(total, 1), "#56B4E9", "sampled", t, false));
      return h("tr", { class: dropped ? "tt-dropped" : null, "data-token": t }, cells);
    });
    return h("table", { class: "tt-table tt-bars", "data-testid": "tt-bars" }, [
      h("caption", {}, "Top tokens (dimmed: removed by the filters)"), h("thead", {}, h("tr", {}, head)), h("tbody", {}, rows)]);
  }

  function curve(v) {
    var width = 300, height = 180, n = Math.min(100, v.curve.length), padL = 34, padB = 28, padT = 24;
    var w = width - padL - 8, hh = height - padB - padT;
    function xy(i, val) { return [padL + (i + 1) / n * w, padT + (1 - val) * hh]; }
    var svg = s("svg", { class: "tt-curve", "data-testid": "tt-curve", width: width, height: height });
    svg.appendChild(s("text", { class: "tt-title", x: 0, y: 12 }, "cumulative probability (" + v.curveStage + ")"));
    [0, 0.5, 1].forEach(function (t) {
      var y = padT + (1 - t) * hh;
      svg.appendChild(s("text", { class: "tt-axis", x: padL - 4, y: (y + 4).toFixed(1), "text-anchor": "end" }, String(t)));
      svg.appendChild(s("line", { x1: padL, x2: padL + w, y1: y.toFixed(1), y2: y.toFixed(1), stroke: "#eaeef2" }));
    });
    svg.appendChild(s("line", { x1: padL, x2: padL, y1: padT, y2: padT + hh, stroke: "#8c959f" }));
    svg.appendChild(s("line", { x1: padL, x2: padL + w, y1: padT + hh, y2: padT + hh, stroke: "#8c959f" }));
    svg.appendChild(s("text", { class: "tt-axis", x: padL + w / 2, y: padT + hh + 22, "text-anchor": "middle" }, "tokens ranked by probability (1\u2013" + n + ")"));
    svg.appendChild(s("polyline", { fill: "none", stroke: "#0072B2", "stroke-width": 1.8,
      points: v.curve.slice(0, n).map(function (val, i) { var p = xy(i, val); return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" ") }));
    if (v.pKept !== null) {
      var y = xy(0, state.top_p)[1];
      svg.appendChild(s("line", { x1: padL, x2: padL + w, y1: y.toFixed(1), y2: y.toFixed(1), stroke: "#D55E00", "stroke-dasharray": "4 3" }));
      svg.appendChild(s("text", { class: "tt-axis", x: padL + w, y: (y - 3).toFixed(1), "text-anchor": "end", fill: "#D55E00" }, "p = " + TinyTrans.fixed(state.top_p, 2)));
      if (v.pKept <= n) {
        var x = xy(v.pKept - 1, 0)[0];
        svg.appendChild(s("line", { x1: x.toFixed(1), x2: x.toFixed(1), y1: padT, y2: padT + hh, stroke: "#D55E00" }));
        svg.appendChild(s("text", { class: "tt-axis", x: (x + 3).toFixed(1), y: padT + hh - 4, fill: "#D55E00", "data-testid": "tt-cut" }, v.pKept + " kept"));
      }
    }
    return svg;
  }

  function histogram(v) {
    if (!v.counts) return null;
    var lab = labels(), total = v.counts.reduce(function (a, b) { return a + b; }, 0) || 1;
    var order = S.ranked(v.final).slice(0, 12).filter(function (i) { return v.final[i] > 0; });
    var width = 360, padL = 60, padT = 20, barH = 16, scale = width - padL - 50;
    var top = Math.max.apply(null, order.map(function (i) { return Math.max(v.final[i], v.counts[i] / total); }));
    var svg = s("svg", { class: "tt-hist", "data-testid": "tt-hist", width: width, height: 22 * order.length + 30 },
      s("text", { class: "tt-title", x: 0, y: 12 }, total + " samples (bars) vs theory (\u2502)"));
    order.forEach(function (i, r) {
      var y = padT + r * 22, px = padL + v.final[i] / top * scale;
      TinyTrans.append(svg, [
        s("text", { class: "tt-label", x: padL - 6, y: y + 12, "text-anchor": "end" }, lab[i]),
        s("rect", { x: padL, y: y, width: (v.counts[i] / total / top * scale).toFixed(1), height: barH, fill: "#56B4E9", "data-token": i, "data-count": v.counts[i] }),
        s("line", { x1: px.toFixed(1), x2: px.toFixed(1), y1: y - 2, y2: y + barH + 2, stroke: "#000", "stroke-width": 2 }),
        s("text", { class: "tt-axis", x: padL + scale + 6, y: y + 12 }, String(v.counts[i]))]);
    });
    return svg;
  }

  var BEAM = { kept: ["#0072B2", "#e8f1fa", null, null], pruned: ["#8c959f", "#ffffff", "3 2", 0.55], finished: ["#009E73", "#e6f5ef", null, null] };
  function beamTree(tree) {
    var col = 150, rowH = 26, nodeW = 118, nodeH = 20;
    var nRows = Math.max.apply(null, tree.steps.map(function (x) { return x.length; }).concat([1]));
    var svg = s("svg", { class: "tt-beam", "data-testid": "tt-beam", width: 70 + col * tree.steps.length + 10, height: 24 + rowH * nRows },
      s("text", { class: "tt-axis", x: 0, y: 24 + nodeH / 2 + 4 }, "context"));
    var parentY = [24 + nodeH / 2];
    tree.steps.forEach(function (cands, st) {
      var x = 70 + st * col, keptY = [];
      cands.forEach(function (c, r) {
        var y = 24 + r * rowH, py = parentY[Math.min(c.parent, parentY.length - 1)];
        var px = st ? 70 + (st - 1) * col + nodeW : 56, mid = (px + x) / 2, style = BEAM[c.status];
        svg.appendChild(s("path", { d: "M" + px.toFixed(1) + "," + py.toFixed(1) + " C" + mid.toFixed(1) + "," + py.toFixed(1) + " " + mid.toFixed(1) + "," + (y + nodeH / 2).toFixed(1) + " " + x.toFixed(1) + "," + (y + nodeH / 2).toFixed(1),
          fill: "none", stroke: style[0], "stroke-width": 1.2, "stroke-dasharray": style[2], opacity: style[3] }));
        svg.appendChild(s("g", { "data-step": st, "data-status": c.status, "data-logp": c.log_prob, "stroke-dasharray": style[2], opacity: style[3] }, [
          s("rect", { x: x, y: y, width: nodeW, height: nodeH, rx: 4, fill: style[1], stroke: style[0] }),
          s("text", { class: "tt-label", x: x + 6, y: y + 14 }, c.label),
          s("text", { class: "tt-axis", x: x + nodeW - 6, y: y + 14, "text-anchor": "end" }, TinyTrans.fixed(c.log_prob, 3)),
          s("title", {}, c.status + ": cumulative log p = " + TinyTrans.fixed(c.log_prob, 4))]));
        if (c.status === "kept") keptY.push(y + nodeH / 2);
      });
      if (keptY.length) parentY = keptY;
    });
    return svg;
  }
  function beamTable(tree) {
    return h("table", { class: "tt-table", "data-testid": "tt-beams" }, [
      h("caption", {}, tree.num_beams + " best beams (score = log p / length)"),
      h("thead", {}, h("tr", {}, ["#", "continuation", "log p", "score"].map(function (x) { return h("th", {}, x); }))),
      h("tbody", {}, tree.best.map(function (b, i) {
        return h("tr", {}, [h("td", {}, String(i + 1)), h("td", { class: "tt-tokcell" }, b.text),
          h("td", { "data-testid": "tt-beam-logp" }, TinyTrans.fixed(b.log_prob, 4)), h("td", {}, TinyTrans.fixed(b.score, 4))]);
      }))]);
  }

  function draw() {
    TinyTrans.clear(body);
    var st = step(), v = view();
    var ctx = st.context.length > 90 ? "\u2026" + st.context.slice(-90) : st.context;
    body.appendChild(h("div", { class: "tt-context", "data-testid": "tt-context" }, [ctx,
      h("span", { class: "tt-next", title: "greedy next token" }, st.next)]));
    body.appendChild(metrics(v));
    body.appendChild(h("div", { class: "tt-row2" }, [bars(v), h("div", {}, [curve(v), histogram(v)])]));
    if (state.method === "beam") {
      var tree = st.beams[String(state.beams)];
      body.appendChild(h("h4", {}, "Beam search (" + tree.num_beams + " beams)"));
      body.appendChild(beamTree(tree));
      body.appendChild(beamTable(tree));
    }
    if (data.truncated) body.appendChild(h("p", { class: "tt-note" }, "Only the " + st.logits.length + " most likely of " + data.vocab_size + " tokens are embedded; the filters act on those."));
    body.appendChild(h("div", { class: "tt-legend" }, ["base", "tempered", "final"].map(function (k) {
      return h("span", {}, [h("i", { class: "tt-swatch", style: { background: COLOURS[k] } }), NAMES[k]]);
    }).concat([h("span", {}, "order: temperature \u2192 top-k \u2192 top-p \u2192 min-p \u2192 renormalise")])));
  }

  buildControls();
  draw();
};
