/* Attention explorable: prompts x layers x heads embedded as integers (lower triangles of
   the weights, full score matrices); one panel per model; hover a row or a token label to
   see what that query attends to. Data: tinytrans.widgets.static.attention_data. */
TinyTrans.views.attention = function (target, data) {
  var h = TinyTrans.h, fmt = TinyTrans.fmt;
  var state = { prompt: 0, layer: 0, head: "mean", view: "weights", query: null };
  var controls = h("div", { class: "tt-controls" });
  var body = h("div", {});
  target.appendChild(controls);
  target.appendChild(body);

  function prompt() { return data.prompts[state.prompt]; }
  function weight(m, L, H, q, k) {
    if (k > q) return null;
    var rec = prompt().models[m];
    if (H === "mean") {
      var sum = 0;
      for (var i = 0; i < data.n_heads; i++) sum += rec.weights[L][i][q * (q + 1) / 2 + k];
      return sum / data.n_heads / data.weight_scale;
    }
    return rec.weights[L][Number(H)][q * (q + 1) / 2 + k] / data.weight_scale;
  }
  function score(m, L, H, q, k) {
    var rec = prompt().models[m], T = prompt().tokens.length;
    if (H === "mean") {
      var sum = 0;
      for (var i = 0; i < data.n_heads; i++) sum += rec.scores[L][i][q * T + k];
      return sum / data.n_heads / data.score_scale;
    }
    return rec.scores[L][Number(H)][q * T + k] / data.score_scale;
  }

  function buildControls() {
    TinyTrans.clear(controls);
    var prompts = data.prompts.map(function (p, i) {
      return [i, p.text.length > 48 ? p.text.slice(0, 47) + "\u2026" : p.text];
    });
    var layers = [], heads = [];
    for (var L = 0; L < data.n_layers; L++) layers.push([L, "layer " + L]);
    for (var H = 0; H < data.n_heads; H++) heads.push([H, "head " + H]);
    heads.push(["mean", "mean of heads"], ["all", "all heads"]);
    TinyTrans.append(controls, [
      TinyTrans.select("prompt", prompts, state.prompt, function (v) { state.prompt = Number(v); state.query = null; draw(); }, "tt-att-prompt"),
      TinyTrans.select("layer", layers, state.layer, function (v) { state.layer = Number(v); draw(); }, "tt-att-layer"),
      TinyTrans.select("head", heads, state.head, function (v) { state.head = v; draw(); }, "tt-att-head"),
      TinyTrans.select("show", [["weights", "weights (after softmax)"], ["scores", "scores q\u00b7k/\u221ad"], ["steps", "scores \u2192 mask \u2192 softmax"]],
        state.view, function (v) { state.view = v; draw(); }, "tt-att-view"),
    ]);
  }

  function strip(m, q) {
    var tokens = prompt().tokens, H = state.head === "all" ? "mean" : state.head;
    return h("div", { class: "tt-strip", "data-testid": "tt-strip" }, tokens.map(function (tok, k) {
      if (k > q) return h("span", { class: "tt-tok tt-future" }, tok);
      var w = weight(m, state.layer, H, q, k), bg = TinyTrans.colour(w, 0, 1);
      return h("span", { class: "tt-tok" + (k === q ? " tt-query" : ""), title: fmt(w), style: { background: bg, color: TinyTrans.ink(bg) } }, tok);
    }));
  }

  function panel(m) {
    var tokens = prompt().tokens, T = tokens.length, L = state.layer, H = state.head;
    var q0 = state.query === null ? T - 1 : state.query;
    var readout = h("div", { class: "tt-caption", "data-testid": "tt-readout" }, "hover a cell for its value");
    var caption = h("div", { class: "tt-caption" });
    var stripHolder = h("div", {});
    var maps = [];
    function setQuery(q) {
      state.query = q;
      caption.textContent = "query " + q + " (" + tokens[q] + ") attends to:";
      TinyTrans.clear(stripHolder).appendChild(strip(m, q));
      maps.forEach(function (svg) { svg.highlight(q); });
    }
    function hover(kind) {
      return function (q, k, v) {
        readout.textContent = "query " + q + " " + JSON.stringify(tokens[q]) + " \u2192 key " + k + " " +
          JSON.stringify(tokens[k]) + ": " + (kind === "scores" ? fmt(v, 2) : fmt(v, 3));
        readout.setAttribute("data-value", String(v));
        readout.setAttribute("data-q", q); readout.setAttribute("data-k", k);
      };
    }
    var figure;
    if (H === "all") {
      figure = h("div", { class: "tt-grid" });
      var cell = Math.max(4, Math.min(10, Math.floor(160 / T)));
      for (var i = 0; i < data.n_heads; i++) {
        (function (hh) {
          var svg = TinyTrans.heatmap(function (q, k) { return weight(m, L, hh, q, k); }, tokens, { cell: cell, labels: false, testid: "tt-small-map" });
          figure.appendChild(h("figure", { class: "tt-small", title: "click to select head " + hh, onclick: function () { state.head = String(hh); buildControls(); draw(); } },
            [h("figcaption", {}, "L" + L + " H" + hh), svg]));
        })(i);
      }
    } else if (state.view === "steps") {
      var sget = function (q, k) { return score(m, L, H, q, k); };
      maps.push(TinyTrans.heatmap(sget, tokens, { kind: "scores", mask: false, title: "1. q\u00b7k/\u221ad", onhover: hover("scores"), onrow: setQuery }));
      maps.push(TinyTrans.heatmap(sget, tokens, { kind: "scores", title: "2. causal mask (\u2212\u221e)", onhover: hover("scores"), onrow: setQuery }));
      maps.push(TinyTrans.heatmap(function (q, k) { return weight(m, L, H, q, k); }, tokens, { title: "3. softmax per row", onhover: hover("weights"), onrow: setQuery }));
      figure = h("div", { class: "tt-steps" }, maps);
    } else if (state.view === "scores") {
      maps.push(TinyTrans.heatmap(function (q, k) { return score(m, L, H, q, k); }, tokens, { kind: "scores", onhover: hover("scores"), onrow: setQuery }));
      figure = maps[0];
    } else {
      maps.push(TinyTrans.heatmap(function (q, k) { return weight(m, L, H, q, k); }, tokens, { onhover: hover("weights"), onrow: setQuery }));
      figure = maps[0];
    }
    var name = H === "mean" ? "mean of heads" : H === "all" ? "all heads" : "head " + H;
    var section = h("section", { class: "tt-panel", "data-testid": "tt-panel", "data-model": m }, [
      h("h4", {}, data.labels[m] + " \u00b7 layer " + L + " \u00b7 " + name), figure, readout, caption, stripHolder]);
    setQuery(q0);
    return section;
  }

  // Per-head statistics: one small layer x head grid per statistic (render.head_stats_table).
  function table(m) {
    var stats = prompt().models[m].stats, T = prompt().tokens.length;
    var keys = ["entropy", "previous", "first", "induction"];
    var names = ["entropy (nats)", "previous token", "first token", "induction"];
    var grids = keys.map(function (key, i) {
      var top = key === "entropy" ? Math.log(Math.max(T, 2)) : 1, heads = [h("th", {})], rows = [];
      for (var H = 0; H < data.n_heads; H++) heads.push(h("th", {}, "H" + H));
      for (var L = 0; L < data.n_layers; L++) {
        var cells = [h("th", {}, "L" + L)];
        for (H = 0; H < data.n_heads; H++) {
          (function (l, hh) {
            var value = stats[key][l][hh], bg = TinyTrans.colour(value, 0, top);
            var chosen = l === state.layer && String(hh) === String(state.head);
            cells.push(h("td", { class: "tt-statcell" + (chosen ? " tt-selected" : ""), "data-stat": key, "data-layer": l, "data-head": hh,
              "data-value": String(value), title: names[i] + ": layer " + l + ", head " + hh + " (click to show)",
              style: { background: bg, color: TinyTrans.ink(bg) },
              onclick: function () { state.layer = l; state.head = String(hh); buildControls(); draw(); } }, fmt(value, 2)));
          })(L, H);
        }
        rows.push(h("tr", {}, cells));
      }
      return h("table", { class: "tt-table tt-mini" }, [h("caption", {}, names[i]), h("thead", {}, h("tr", {}, heads)), h("tbody", {}, rows)]);
    });
    return h("div", { class: "tt-stats", "data-testid": "tt-head-stats", "data-model": m }, [
      h("div", { class: "tt-caption" }, [h("b", {}, data.labels[m]), ": per-head statistics, mean over queries (rows = layers, columns = heads; click a cell to show that head)"]),
      h("div", { class: "tt-statgrid" }, grids)]);
  }

  function draw() {
    TinyTrans.clear(body);
    var panels = h("div", { class: "tt-panels" }), tables = h("div", {});
    data.labels.forEach(function (_, m) { panels.appendChild(panel(m)); tables.appendChild(table(m)); });
    var legend = h("div", { class: "tt-legend" }, [TinyTrans.gradient(TinyTrans.BLUES, "0", "1", "attention weight")]);
    if (state.view !== "weights") legend.appendChild(TinyTrans.gradient(TinyTrans.PUOR, "\u2212", "+", "score q\u00b7k/\u221ad"));
    legend.appendChild(h("span", {}, [h("i", { class: "tt-swatch tt-masked-swatch" }), "masked (future)"]));
    TinyTrans.append(body, [panels, legend, tables]);
  }

  buildControls();
  draw();
};
