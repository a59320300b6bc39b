/* Parameter / memory / FLOPs explorable: a port of the closed-form formulas of
   tinytrans/sizing.py (parameter_breakdown, weight_bytes, kv_cache_bytes,
   layer_activation_bytes, activation_bytes, training_memory, forward_flops_per_token,
   training_flops, training_seconds, chinchilla_loss, format_*) and of
   tinytrans.widgets.data.sizing_figures. tests/test_browser.py pins it to Python. */
TinyTrans.sizing = (function () {
  var Z = {};
  Z.kvHeads = function (c) { return c.n_kv_heads === null || c.n_kv_heads === undefined ? c.n_heads : c.n_kv_heads; };
  Z.headDim = function (c) { return Math.floor(c.d_model / c.n_heads); };
  Z.normParams = function (c) { return c.norm === "layernorm" ? 2 * c.d_model : c.d_model; };
  Z.linear = function (i, o, bias) { return i * o + (bias ? o : 0); };

  // ModelConfig.validate (the checks a form can violate); returns an error message or null.
  Z.validate = function (c) {
    var keys = ["vocab_size", "context_length", "d_model", "n_layers", "n_heads", "d_ff"];
    for (var i = 0; i < keys.length; i++) {
      var v = c[keys[i]];
      if (!Number.isInteger(v) || v <= 0) return keys[i] + " must be a positive integer, got " + v + ".";
    }
    if (c.d_model % c.n_heads) return "d_model (" + c.d_model + ") must be divisible by n_heads (" + c.n_heads + ").";
    var kv = Z.kvHeads(c);
    if (!Number.isInteger(kv) || kv <= 0) return "n_kv_heads must be a positive integer.";
    if (c.n_heads % kv) return "n_heads (" + c.n_heads + ") must be a multiple of n_kv_heads (" + kv + ").";
    if (c.positional === "rope" && Z.headDim(c) % 2) return "RoPE needs an even head_dim = d_model / n_heads; got " + Z.headDim(c) + ".";
    if (c.positional === "sinusoidal" && c.d_model % 2) return "sinusoidal positions need an even d_model.";
    return null;
  };

  Z.layerDetail = function (c) {
    var d = c.d_model, kvDim = Z.kvHeads(c) * Z.headDim(c), f = c.d_ff, b = c.bias, out = {};
    out.attn_norm = Z.normParams(c);
    out.q_proj = Z.linear(d, d, b); out.k_proj = Z.linear(d, kvDim, b);
    out.v_proj = Z.linear(d, kvDim, b); out.o_proj = Z.linear(d, d, b);
    out.ffn_norm = Z.normParams(c);
    if (c.activation === "swiglu") out.gate_proj = Z.linear(d, f, b);
    out.up_proj = Z.linear(d, f, b); out.down_proj = Z.linear(f, d, b);
    return out;
  };

  Z.breakdown = function (c) {
    var det = Z.layerDetail(c), vocabMatrix = c.vocab_size * c.d_model;
    var r = {
      n_layers: c.n_layers,
      token_embedding: vocabMatrix,
      position_embedding: c.positional === "learned" ? c.context_length * c.d_model : 0,
      attention: det.q_proj + det.k_proj + det.v_proj + det.o_proj,
      ffn: (det.gate_proj || 0) + det.up_proj + det.down_proj,
      norms: det.attn_norm + det.ffn_norm,
      final_norm: c.norm_placement === "pre" ? Z.normParams(c) : 0,
      head: c.tie_embeddings ? 0 : vocabMatrix,
      head_tied: !!c.tie_embeddings,
    };
    r.per_layer = r.attention + r.ffn + r.norms;
    r.blocks = r.per_layer * r.n_layers;
    r.embeddings = r.token_embedding + r.position_embedding;
    r.total = r.embeddings + r.blocks + r.final_norm + r.head;
    r.non_embedding = r.total - r.embeddings;
    return r;
  };

  // ParameterBreakdown.as_rows
  Z.rows = function (b) {
    var L = b.n_layers, layers = "x " + L + " layers";
    var rows = [
      ["token embedding", null, b.token_embedding, ""],
      ["position embedding", null, b.position_embedding, ""],
      ["attention", b.attention, b.attention * L, layers],
      ["feed-forward", b.ffn, b.ffn * L, layers],
      ["block norms", b.norms, b.norms * L, layers],
      ["final norm", null, b.final_norm, ""],
      ["output head", null, b.head, b.head_tied ? "tied to token embedding" : ""],
      ["total", b.per_layer, b.total, "per-layer column: one block"],
    ];
    return rows.map(function (r) { return { component: r[0], per_layer: r[1], count: r[2], share: r[2] / b.total, note: r[3] }; });
  };

  Z.weightBytes = function (n, dtype, bytes) { return Math.ceil(n * bytes[dtype]); };
  Z.kvCache = function (c, batch, context, dtype, bytes) {
    return Math.ceil(2 * batch * context * c.n_layers * Z.kvHeads(c) * Z.headDim(c) * bytes[dtype]);
  };
  Z.ffnSaved = function (c) { return { relu: 1, gelu: 2, swiglu: 4 }[c.activation]; };
  Z.layerActivation = function (c, batch, s, dtype, bytes, fused) {
    var b = batch, h = c.d_model, a = c.n_heads, f = c.d_ff, e = bytes[dtype];
    var sbh = s * b * h, dropout = c.dropout > 0;
    var total = (8 * sbh + Z.ffnSaved(c) * s * b * f) * e;
    if (fused) total += 4 * a * s * b;
    else { var probs = a * s * s * b; total += probs * e + (dropout ? probs * (1 + e) : 0); }
    if (dropout) total += 2 * sbh;
    return Math.ceil(total);
  };
  Z.activations = function (c, batch, s, dtype, bytes, checkpointing, fused) {
    var b = batch, h = c.d_model, v = c.vocab_size, e = bytes[dtype];
    var layer = Z.layerActivation(c, b, s, dtype, bytes, fused), blocks;
    if (checkpointing) blocks = Math.ceil(c.n_layers * s * b * h * e) + layer;
    else blocks = c.n_layers * layer;
    var headInputs = (c.norm_placement === "pre" ? 2 : 1) * s * b * h * e;
    var embDropout = c.dropout > 0 ? s * b * h : 0;
    var logits = s * b * v * e + 4 * s * b * v;
    return blocks + Math.ceil(headInputs + logits) + embDropout;
  };
  // sizing.training_memory with a precision recipe of tinytrans.precision (data.precisions)
  Z.trainingMemory = function (c, batch, s, recipe, optimizerBytes, checkpointing, bytes) {
    var n = Z.breakdown(c).total;
    return {
      weights: Z.weightBytes(n, recipe.weights, bytes),
      gradients: Z.weightBytes(n, recipe.weights, bytes),
      optimizer: n * optimizerBytes,
      master_weights: recipe.master_weights ? Z.weightBytes(n, "fp32", bytes) : 0,
      activations: Z.activations(c, batch, s, recipe.compute, bytes, checkpointing, true),
    };
  };
  Z.forwardFlops = function (c, context) {
    var b = Z.breakdown(c);
    return 2 * (b.blocks + b.final_norm + c.vocab_size * c.d_model) + 2 * c.n_layers * context * c.d_model;
  };
  Z.chinchillaLoss = function (n, d, fit) { return fit.E + fit.A / Math.pow(n, fit.alpha) + fit.B / Math.pow(d, fit.beta); };

  // tinytrans.widgets.data.sizing_figures
  Z.figures = function (c, o, data) {
    var bytes = data.dtype_bytes, recipe = data.precisions[o.precision], dtype = recipe.compute;
    var b = Z.breakdown(c), n = b.total, context = c.context_length;
    var tokens = o.tokens > 0 ? o.tokens : data.tokens_per_param * n;
    var mem = Z.trainingMemory(c, o.batch, context, recipe, data.optimizer_bytes[o.optimizer], o.checkpointing, bytes);
    mem.states = mem.weights + mem.gradients + mem.optimizer + mem.master_weights;
    mem.total = mem.states + mem.activations;
    var fwd = Z.forwardFlops(c, context), train = 3 * fwd, flops = train * tokens;
    return {
      parameters: n, non_embedding: b.non_embedding, breakdown: Z.rows(b), memory: mem,
      kv_cache: Z.kvCache(c, o.batch, context, dtype, bytes),
      weights_inference: Z.weightBytes(n, dtype, bytes),
      forward_flops_per_token: fwd, training_flops_per_token: train, tokens: tokens,
      training_flops: flops, six_nd: 6 * n * tokens,
      training_seconds: flops / (data.devices[o.device] * 1e12 * o.mfu),
      chinchilla_tokens: data.tokens_per_param * n,
      predicted_loss: Z.chinchillaLoss(n, tokens, data.chinchilla), dtype: dtype, precision: o.precision,
    };
  };

  /* -- sizing.format_* ----------------------------------------------------------------- */
  Z.scaled = function (value, base, units, digits) {
    var index = 0;
    while (index + 1 < units.length && Math.abs(value) >= Math.pow(base, index + 1)) index++;
    for (;;) {
      var sc = Number(TinyTrans.pyG(value / Math.pow(base, index), digits));
      if (Math.abs(sc) >= base && index + 1 < units.length) { index++; continue; }
      var mag = sc ? Math.floor(Math.log10(Math.abs(sc))) : 0;
      return [TinyTrans.fixed(sc, Math.max(0, digits - 1 - mag)), units[index]];
    }
  };
  Z.formatCount = function (n) {
    if (Math.abs(n) < 1000 && Number.isInteger(n)) return String(n);
    var r = Z.scaled(n, 1000, ["", "K", "M", "B", "T"], 3);
    return r[0] + r[1];
  };
  Z.formatBytes = function (n) {
    if (Math.abs(n) < 1000 && Number.isInteger(n)) return n + " B";
    var r = Z.scaled(n, 1000, ["B", "kB", "MB", "GB", "TB", "PB"], 3);
    return r[0] + " " + r[1];
  };
  Z.formatFlops = function (f) {
    if (Math.abs(f) >= 1e18) {
      var parts = TinyTrans.pyE(f, 3);
      return parts[0] + "e" + parts[1] + " FLOP";
    }
    var r = Z.scaled(f, 1000, ["", "K", "M", "G", "T", "P"], 3);
    return r[0] + " " + r[1] + "FLOP";
  };
  Z.formatDuration = function (seconds) {
    var units = [["years", 365.25 * 86400], ["days", 86400], ["h", 3600], ["min", 60]];
    for (var i = 0; i < units.length; i++) {
      if (seconds >= units[i][1]) {
        var x = seconds / units[i][1];
        return (x < 10 ? TinyTrans.pyG(x, 2) : TinyTrans.fixed(x, 0)) + " " + units[i][0];
      }
    }
    if (seconds >= 1) return (seconds < 10 ? TinyTrans.pyG(seconds, 2) : TinyTrans.fixed(seconds, 0)) + " s";
    return TinyTrans.pyG(seconds * 1000, 2) + " ms";
  };
  return Z;
})();

TinyTrans.views.sizing = function (target, data) {
  var h = TinyTrans.h, Z = TinyTrans.sizing;
  var state = { preset: data.default_preset, config: Object.assign({}, data.presets[data.default_preset]) };
  Object.assign(state, data.defaults);
  var controls = h("div", { class: "tt-controls" }), body = h("div", {});
  target.appendChild(controls);
  target.appendChild(body);

  function pairs(labels) { return Object.keys(labels).map(function (k) { return [k, labels[k]]; }); }
  function setField(key) {
    return function (v) { state.config[key] = v; state.preset = "custom"; buildControls(); draw(); };
  }
  function numberField(label, key, min) {
    return TinyTrans.number(label, min, 1e9, 1, state.config[key], function (v) { setField(key)(Math.round(v)); }, "tt-z-" + key);
  }
  function buildControls() {
    TinyTrans.clear(controls);
    var c = state.config, presets = data.preset_order.map(function (n) { return [n, n]; });
    if (state.preset === "custom") presets.unshift(["custom", "custom"]);
    TinyTrans.append(controls, [
      h("div", { class: "tt-group" }, "Model"),
      TinyTrans.select("preset", presets, state.preset, function (v) {
        if (v === "custom") return;
        state.preset = v; state.config = Object.assign({}, data.presets[v]); buildControls(); draw();
      }, "tt-z-preset"),
      numberField("vocab", "vocab_size", 1), numberField("d_model", "d_model", 1),
      numberField("layers", "n_layers", 1), numberField("heads", "n_heads", 1),
      TinyTrans.number("kv heads", 1, 1e6, 1, Z.kvHeads(c), function (v) { setField("n_kv_heads")(Math.round(v)); }, "tt-z-n_kv_heads"),
      numberField("d_ff", "d_ff", 1), numberField("context", "context_length", 1),
      TinyTrans.select("positions", data.choices.positional, c.positional, setField("positional"), "tt-z-positional"),
      TinyTrans.select("norm", data.choices.norm, c.norm, setField("norm"), "tt-z-norm"),
      TinyTrans.select("placement", data.choices.norm_placement, c.norm_placement, setField("norm_placement"), "tt-z-norm_placement"),
      TinyTrans.select("activation", data.choices.activation, c.activation, setField("activation"), "tt-z-activation"),
      TinyTrans.checkbox("tied embeddings", c.tie_embeddings, setField("tie_embeddings"), "tt-z-tie_embeddings"),
      TinyTrans.checkbox("Linear biases", c.bias, setField("bias"), "tt-z-bias"),
      h("div", { class: "tt-group" }, "Training"),
      TinyTrans.number("batch", 1, 1e6, 1, state.batch, function (v) { state.batch = Math.max(1, Math.round(v)); draw(); }, "tt-z-batch"),
      TinyTrans.select("precision", pairs(data.precision_labels), state.precision,
        function (v) { state.precision = v; draw(); }, "tt-z-precision"),
      TinyTrans.select("optimizer", pairs(data.optimizer_labels), state.optimizer,
        function (v) { state.optimizer = v; draw(); }, "tt-z-optimizer"),
      TinyTrans.checkbox("activation checkpointing", state.checkpointing, function (v) { state.checkpointing = v; draw(); }, "tt-z-checkpointing"),
      TinyTrans.number("tokens D (0 = 20/param)", 0, 1e16, 1, state.tokens, function (v) { state.tokens = Math.max(0, v); draw(); }, "tt-z-tokens"),
      TinyTrans.select("device", Object.keys(data.devices), state.device, function (v) { state.device = v; draw(); }, "tt-z-device"),
      TinyTrans.range("MFU", 0.05, 1, 0.05, state.mfu, function (v) { state.mfu = v; draw(); }, "tt-z-mfu"),
    ]);
  }

  function cell(testid, value, shown) { return h("td", { "data-testid": testid, "data-value": String(value) }, shown); }
  function table(testid, caption, head, rows) {
    return h("table", { class: "tt-table", "data-testid": testid }, [h("caption", {}, caption),
      h("thead", {}, h("tr", {}, head.map(function (x) { return h("th", {}, x); }))), h("tbody", {}, rows)]);
  }
  function stacked(parts, testid) {
    var total = parts.reduce(function (a, p) { return a + p[1]; }, 0) || 1;
    // Skip empty parts but keep each component's colour (its index in the full list).
    return [h("div", { class: "tt-stack", "data-testid": testid }, parts.map(function (p, i) {
      var share = p[1] / total * 100;
      return p[1] ? h("i", { title: p[0] + ": " + TinyTrans.fixed(share, 1) + "%", style: { width: share.toFixed(3) + "%", background: TinyTrans.CATEGORICAL[i % 7] } }) : null;
    })), h("div", { class: "tt-legend" }, parts.map(function (p, i) {
      return p[1] ? h("span", {}, [h("i", { class: "tt-swatch", style: { background: TinyTrans.CATEGORICAL[i % 7] } }), p[0] + " " + TinyTrans.fixed(p[1] / total * 100, 1) + "%"]) : null;
    }))];
  }
  var MEMORY = [["weights", "weights"], ["gradients", "gradients"], ["optimizer", "optimizer states"],
    ["master_weights", "fp32 master weights"], ["activations", "activations (saved for backward)"]];

  function draw() {
    TinyTrans.clear(body);
    var c = state.config, problem = Z.validate(c);
    if (problem) {
      body.appendChild(h("div", { class: "tt-error", "data-testid": "tt-error", role: "alert" }, "Invalid configuration: " + problem));
      return;
    }
    var f = Z.figures(c, state, data), mem = f.memory;
    var paramRows = f.breakdown.map(function (r) {
      return h("tr", { class: r.component === "total" ? "tt-total" : null }, [h("td", {}, r.component),
        h("td", {}, r.per_layer === null ? "" : TinyTrans.intComma(r.per_layer)),
        cell("tt-param-" + r.component.toLowerCase().split(/[\s/]+/).join("-"), r.count, TinyTrans.intComma(r.count)),
        h("td", {}, Z.formatCount(r.count)), h("td", {}, TinyTrans.fixed(r.share * 100, 1) + "%"), h("td", { class: "tt-note" }, r.note)]);
    });
    var params = f.breakdown.slice(0, -1).map(function (r) { return [r.component, r.count]; });
    var memRows = MEMORY.map(function (m) { return h("tr", {}, [h("td", {}, m[1]), cell("tt-mem-" + m[0], mem[m[0]], Z.formatBytes(mem[m[0]])), h("td", {})]); });
    memRows.push(h("tr", { class: "tt-total" }, [h("td", {}, "training total"), cell("tt-mem-total", mem.total, Z.formatBytes(mem.total)), h("td", {})]));
    memRows.push(h("tr", {}, [h("td", {}, "inference weights (" + f.dtype + ")"), cell("tt-mem-inference", f.weights_inference, Z.formatBytes(f.weights_inference)), h("td", {})]));
    memRows.push(h("tr", {}, [h("td", {}, "KV cache (batch " + state.batch + " \u00d7 " + c.context_length + " tokens)"), cell("tt-kv-cache", f.kv_cache, Z.formatBytes(f.kv_cache)), h("td", {})]));
    var memory = MEMORY.map(function (m) { return [m[1], mem[m[0]]]; });
    var compute = [
      ["forward FLOPs / token", "tt-flops-forward", f.forward_flops_per_token, Z.formatFlops(f.forward_flops_per_token), ""],
      ["training FLOPs / token (3\u00d7 forward)", "tt-flops-train-token", f.training_flops_per_token, Z.formatFlops(f.training_flops_per_token), ""],
      ["training tokens D", "tt-tokens", f.tokens, Z.formatCount(f.tokens), "Chinchilla: " + Z.formatCount(f.chinchilla_tokens)],
      ["training compute", "tt-flops-train", f.training_flops, Z.formatFlops(f.training_flops), ""],
      ["6ND", "tt-six-nd", f.six_nd, Z.formatFlops(f.six_nd), ""],
      ["time on " + state.device + " at " + Math.round(state.mfu * 100) + "% MFU", "tt-time", f.training_seconds, Z.formatDuration(f.training_seconds), ""],
      ["Chinchilla-fit loss", "tt-loss", f.predicted_loss, TinyTrans.fixed(f.predicted_loss, 2) + " nats", ""],
    ].map(function (r) { return h("tr", {}, [h("td", {}, r[0]), cell(r[1], r[2], r[3]), h("td", {}, r[4])]); });
    body.appendChild(h("div", { class: "tt-row2" }, [
      h("div", {}, [table("tt-params", "Parameters", ["component", "per layer", "count", "", "share", ""], paramRows), stacked(params, "tt-param-bar")]),
      h("div", {}, [table("tt-memory", "Memory", ["what", "bytes", ""], memRows), stacked(memory, "tt-mem-bar")]),
      h("div", {}, [table("tt-compute", "Compute", ["what", "value", ""], compute)]),
    ]));
  }

  buildControls();
  draw();
};
