// flowrec live dashboard: polls GET /v1/metrics/live (and the experiments endpoints when the API has them)
// and draws its series as SVG line charts.  Plain browser JavaScript, no build step, no external files;
// data is rendered with textContent / SVG attributes only.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  // Freshness samples kept by the page (one per refresh): an hour at 5 s.
  const FRESHNESS_SAMPLES = 720;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const WIDTH = 600, HEIGHT = 220;
  const MARGIN = { left: 52, right: 12, top: 12, bottom: 26 };
  // Colour-blind-safe palette (Okabe-Ito, then Tol's muted): a line keeps its colour while its label exists.
  const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#332288", "#882255", "#117733", "#999933", "#44aa99", "#aa4499"];

  const state = {
    paused: false,
    timer: null,
    busy: false,
    colours: new Map(),      // line label -> colour
    freshness: [],           // [{t, lag, p50, p99}] sampled by this page
    experimentsApi: null,    // null: not tried yet; false: the API has no experiments endpoint
    lastBody: null,
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "scope" || k === "title") node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) node.append(child);
    return node;
  };
  const svg = (tag, attrs, text) => {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // ---- formatting -------------------------------------------------------------------
  const count = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 2 }));
  const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(v < 0.1 ? 2 : 1)}%`);
  const ms = (v) => (v === null || v === undefined ? "–" : v >= 10000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);
  const perSecond = (v) => (v === null || v === undefined ? "–" : v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1));
  const clockTime = (t) => {
    const d = new Date(t);
    return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  };

  function colour(label) {
    if (!state.colours.has(label)) state.colours.set(label, PALETTE[state.colours.size % PALETTE.length]);
    return state.colours.get(label);
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : null;
    if (!response.ok) {
      const error = new Error(`${response.status}: ${body && body.detail ? body.detail : response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function setStatus(text, isError) {
    const node = $("status");
    node.textContent = text;
    node.className = isError ? "status error" : "status";
  }

  // ---- charts -----------------------------------------------------------------------
  // A nice upper bound for the y axis: 1, 2 or 5 times a power of ten, at least max.
  function niceMax(max) {
    if (!(max > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(max));
    for (const step of [1, 2, 5, 10]) if (step * power >= max) return step * power;
    return 10 * power;
  }

  // lines: [{label, points: [[x, y|null], ...]}]; x in epoch ms.  Draws into the figure, replacing its chart.
  function lineChart(figure, lines, options) {
    const caption = figure.querySelector("figcaption").textContent;
    const format = options.format;
    const [x0, x1] = options.xDomain;
    const drawn = lines.filter((line) => line.points.some(([, y]) => y !== null && y !== undefined));
    const yMax = niceMax(Math.max(0, ...drawn.flatMap((line) => line.points.map(([, y]) => y ?? 0))));
    const plotW = WIDTH - MARGIN.left - MARGIN.right, plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const sx = (x) => MARGIN.left + (x1 > x0 ? ((x - x0) / (x1 - x0)) * plotW : plotW / 2);
    const sy = (y) => MARGIN.top + plotH - (y / yMax) * plotH;

    const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-labelledby": `${figure.id}-title ${figure.id}-desc` });
    root.append(svg("title", { id: `${figure.id}-title` }, caption));
    const latest = drawn.map((line) => {
      const last = [...line.points].reverse().find(([, y]) => y !== null && y !== undefined);
      return `${line.label}: ${format(last[1])} at ${clockTime(last[0])}`;
    });
    root.append(svg("desc", { id: `${figure.id}-desc` }, drawn.length ? `Latest values. ${latest.join("; ")}.` : options.empty));

    for (let k = 0; k <= 4; k++) {
      const y = (yMax * k) / 4;
      root.append(svg("line", { class: k ? "grid" : "axis", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: sy(y), y2: sy(y) }));
      root.append(svg("text", { class: "tick", x: MARGIN.left - 6, y: sy(y) + 3, "text-anchor": "end" }, format(y)));
    }
    root.append(svg("line", { class: "axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: MARGIN.top + plotH }));
    const ticks = 6;
    for (let k = 0; k <= ticks; k++) {
      const x = x0 + ((x1 - x0) * k) / ticks;
      root.append(svg("text", { class: "tick", x: sx(x), y: HEIGHT - 8, "text-anchor": k === 0 ? "start" : k === ticks ? "end" : "middle" }, clockTime(x)));
      if (x1 <= x0) break;
    }

    if (!drawn.length) {
      root.append(svg("text", { class: "nodata", x: MARGIN.left + plotW / 2, y: MARGIN.top + plotH / 2, "text-anchor": "middle" }, options.empty));
    }
    for (const line of drawn) {
      const stroke = colour(line.label);
      const group = svg("g", { "data-label": line.label });
      // One path, broken where a minute has no value (no impressions: no rate).
      let d = "", open = false;
      for (const [x, y] of line.points) {
        if (y === null || y === undefined) { open = false; continue; }
        d += `${open ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
        open = true;
      }
      group.append(svg("path", { class: "line", d, stroke }));
      for (const [x, y] of line.points) {
        if (y === null || y === undefined) continue;
        const point = svg("circle", { class: "point", cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.5, fill: stroke, "data-x": x, "data-y": y });
        point.append(svg("title", {}, `${line.label}, ${clockTime(x)}: ${format(y)}`));
        group.append(point);
      }
      root.append(group);
    }

    const legend = el("ul", { class: "legend", "aria-label": `legend of ${caption}` });
    for (const line of drawn) {
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = colour(line.label);
      legend.append(el("li", { "data-label": line.label }, swatch, line.label));
    }
    figure.querySelector("svg")?.remove();
    figure.querySelector(".legend")?.remove();
    figure.append(root, legend);
  }

  // ---- data -------------------------------------------------------------------------
  function shownSeries(body) {
    const context = $("context").value;
    return body.series.filter((s) => (context === "each" ? s.context !== "all" : s.context === context) && s.totals.impressions + s.totals.choices > 0);
  }

  function seriesLabel(s, body) {
    // Users in no experiment are one group (experiment and variant "~").
    const name = s.experiment === "~" ? "no experiment" : body.experiment ? s.variant : `${s.experiment}/${s.variant}`;
    return $("context").value === "each" ? `${name} · ${s.context}` : name;
  }

  function rateLines(body, rate) {
    return shownSeries(body).map((s) => ({ label: seriesLabel(s, body), points: body.minute_starts.map((t, k) => [t, s[rate][k]]) }));
  }

  function minuteDomain(starts) {
    return [starts[0], starts[starts.length - 1]];
  }

  function sumOverVariants(body) {
    // The key figures add up each variant's contexts-summed series ("all").
    const totals = { impressions: 0, clicks: 0, purchases: 0, revenue: 0, choices: 0, hits: 0 };
    for (const s of body.series) {
      if (s.context !== "all") continue;
      for (const k of Object.keys(totals)) totals[k] += s.totals[k];
    }
    return totals;
  }

  function renderFigures(body) {
    const t = sumOverVariants(body);
    $("fig-impressions").textContent = count(t.impressions);
    $("fig-clicks").textContent = count(t.clicks);
    $("fig-ctr").textContent = pct(t.impressions ? t.clicks / t.impressions : null);
    $("fig-purchases").textContent = count(t.purchases);
    $("fig-conversion").textContent = pct(t.impressions ? t.purchases / t.impressions : null);
    $("fig-revenue").textContent = count(t.revenue);
    $("fig-hit-rate").textContent = pct(t.choices ? t.hits / t.choices : null);
    const ops = body.ops;
    const rates = ops.events_per_s.filter((v) => v !== null);
    $("fig-events-rate").textContent = perSecond(rates.length ? rates[rates.length - 1] : null);
    $("fig-freshness").textContent = ms(ops.freshness_ms);
    $("fig-late").textContent = count(ops.totals.late_events);
    $("fig-dead").textContent = count(ops.totals.dead_letters);
    $("empty").hidden = t.impressions > 0;
  }

  function renderCharts(body) {
    const domain = minuteDomain(body.minute_starts);
    const none = "no impressions yet";
    lineChart($("chart-ctr"), rateLines(body, "ctr"), { format: pct, xDomain: domain, empty: none });
    lineChart($("chart-conversion"), rateLines(body, "conversion"), { format: pct, xDomain: domain, empty: none });
    lineChart($("chart-hit-rate"), rateLines(body, "hit_rate"), { format: pct, xDomain: domain, empty: "no attributed choices yet" });

    const ops = body.ops;
    const opsDomain = minuteDomain(ops.minute_starts);
    const idle = ops.events.every((v) => v === 0);
    lineChart($("chart-events"), idle ? [] : [{ label: "events/s", points: ops.minute_starts.map((t, k) => [t, ops.events_per_s[k]]) }], { format: perSecond, xDomain: opsDomain, empty: "no events processed in these minutes" });
    const problems = [
      { label: "late events", points: ops.minute_starts.map((t, k) => [t, ops.late_events[k]]) },
      { label: "dead letters", points: ops.minute_starts.map((t, k) => [t, ops.dead_letters[k]]) },
    ];
    const anyProblem = ops.late_events.some((v) => v) || ops.dead_letters.some((v) => v);
    lineChart($("chart-problems"), anyProblem ? problems : [], { format: count, xDomain: opsDomain, empty: "no late events or dead letters in these minutes" });

    const samples = state.freshness;
    const freshLines = samples.length ? [
      { label: "behind now (clock − newest window)", points: samples.map((s) => [s.t, s.lag]) },
      { label: "p50 of recorded lags", points: samples.map((s) => [s.t, s.p50]) },
      { label: "p99 of recorded lags", points: samples.map((s) => [s.t, s.p99]) },
    ] : [];
    const freshDomain = samples.length ? [samples[0].t, samples[samples.length - 1].t] : [body.now_ms, body.now_ms];
    lineChart($("chart-freshness"), freshLines, { format: ms, xDomain: freshDomain, empty: "the job has closed no window yet" });
  }

  // The job keeps no history of its freshness: the page samples it at each refresh.
  function sampleFreshness(body) {
    const ops = body.ops;
    if (ops.freshness_ms === null) return;
    state.freshness.push({ t: body.now_ms, lag: ops.freshness_ms, p50: ops.freshness_p50_ms, p99: ops.freshness_p99_ms });
    if (state.freshness.length > FRESHNESS_SAMPLES) state.freshness.shift();
  }

  function renderVariantTable(body) {
    const rows = body.series.filter((s) => s.totals.impressions + s.totals.choices + s.totals.clicks + s.totals.purchases > 0);
    const tbody = $("variant-table").querySelector("tbody");
    if (!rows.length) {
      tbody.replaceChildren(el("tr", {}, el("td", { colSpan: 11, class: "hint", textContent: "no impressions yet" })));
      return;
    }
    tbody.replaceChildren(...rows.map((s) => {
      const t = s.totals;
      const cells = [s.experiment, s.variant, s.context, count(t.impressions), count(t.clicks), pct(t.ctr), count(t.carts), count(t.purchases), pct(t.conversion), count(t.revenue), pct(t.hit_rate)];
      return el("tr", { class: s.context === "all" ? "sum" : "", "data-experiment": s.experiment, "data-variant": s.variant, "data-context": s.context }, ...cells.map((c) => el("td", { textContent: c })));
    }));
  }

  function renderDeadLetters(body) {
    const reasons = Object.entries(body.ops.dead_letter_reasons);
    $("dead-letter-box").hidden = !reasons.length;
    $("dead-reasons").replaceChildren(...reasons.map(([reason, n]) => el("li", { textContent: `${reason}: ${count(n)}` })));
  }

  function updateExperimentChoices(ids) {
    const select = $("experiment");
    const known = new Set([...select.options].map((o) => o.value));
    for (const id of ids) {
      if (known.has(id)) continue;
      select.append(el("option", { value: id, textContent: id === "~" ? "no experiment (~)" : id }));
      known.add(id);
    }
  }

  // ---- experiments (GET /v1/experiments, GET /v1/experiments/{id}) ------------------
  function listedIds(listing) {
    const entries = Array.isArray(listing) ? listing : listing.experiments || listing.items || [];
    return entries.map((e) => (typeof e === "string" ? e : e.id)).filter((id) => typeof id === "string");
  }

  function resultTable(result) {
    const variants = result.variants || {};
    const names = Object.keys(variants);
    const columns = ["share", "impressions", "clicks", "ctr", "ctr_ci", "purchases", "conversion", "conversion_ci", "lift", "p_value", "verdict"];
    const present = columns.filter((c) => names.some((n) => variants[n][c] !== undefined));
    const table = el("table", { "data-experiment": result.id || "" });
    const heading = { ctr: "CTR", ctr_ci: "CTR 95% interval", conversion_ci: "conversion 95% interval", p_value: "p-value", lift: "CTR lift" };
    table.append(el("thead", {}, el("tr", {}, el("th", { scope: "col", textContent: "variant" }), ...present.map((c) => el("th", { scope: "col", textContent: heading[c] || c })))));
    const body = el("tbody");
    for (const name of names) {
      const v = variants[name];
      const cell = (c) => {
        const value = v[c];
        if (Array.isArray(value)) return value.map((x) => pct(x)).join(" – ");
        if (value === null || value === undefined) return "–";
        if (c === "ctr" || c === "conversion" || c === "share") return pct(value);
        if (c === "lift") return `${value >= 0 ? "+" : ""}${pct(value)}`;
        if (c === "p_value") return value < 0.001 ? "< 0.001" : value.toFixed(3);
        return typeof value === "number" ? count(value) : String(value);
      };
      const label = name === result.control && name !== "control" ? `${name} (control)` : name;
      body.append(el("tr", { "data-variant": name }, el("td", { textContent: label }), ...present.map((c) => el("td", { class: c === "verdict" ? "text" : "", textContent: cell(c) }))));
    }
    table.append(body);
    return table;
  }

  function verdictText(result) {
    const how = [result.test ? `test: ${result.test}` : "", result.interval ? `intervals: ${result.interval}` : ""].filter(Boolean).join("; ");
    const verdict = typeof result.verdict === "string" ? result.verdict : "";
    return how ? `${verdict} (${how})` : verdict;
  }

  async function refreshExperiments() {
    if (state.experimentsApi === false) return;
    let ids;
    try {
      ids = listedIds(await getJson("/v1/experiments"));
      state.experimentsApi = true;
    } catch (err) {
      // An API without the experiments endpoints: the section stays hidden, the rest works.
      if (err.status === 404 || err.status === 405) state.experimentsApi = false;
      return;
    }
    updateExperimentChoices(ids);
    const chosen = $("experiment").value;
    const shown = chosen && chosen !== "~" ? [chosen] : ids;
    const blocks = [];
    for (const id of shown.slice(0, 10)) {
      try {
        const answer = await getJson(`/v1/experiments/${encodeURIComponent(id)}`);
        // The comparison may be the answer itself or one of its members.
        const result = answer.result && answer.result.variants ? answer.result : answer;
        const verdict = verdictText(result);
        blocks.push(el("div", { class: "experiment", "data-experiment": id },
          el("h3", { textContent: result.status ? `${id} (${result.status})` : id }),
          el("p", { class: `verdict${result.winner ? " significant" : ""}`, textContent: verdict }),
          resultTable({ id, ...result })));
      } catch (err) {
        blocks.push(el("p", { class: "hint", textContent: `${id}: ${err.message}` }));
      }
    }
    $("experiments").hidden = false;
    $("experiment-results").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "hint", textContent: "no experiment declared (flowrec experiment start …)" })]));
  }

  // ---- refresh loop -----------------------------------------------------------------
  function query() {
    const params = new URLSearchParams({ minutes: $("minutes").value, anchor: $("anchor").value });
    const experiment = $("experiment").value;
    if (experiment) params.set("experiment", experiment);
    return params;
  }

  async function refresh() {
    if (state.busy) return;
    state.busy = true;
    try {
      const body = await getJson(`/v1/metrics/live?${query()}`);
      state.lastBody = body;
      sampleFreshness(body);
      updateExperimentChoices([...new Set(body.series.map((s) => s.experiment))]);
      render(body);
      await refreshExperiments();
      const anchor = body.anchor === "job" ? " (minutes end at the job's event time)" : "";
      setStatus(`updated ${new Date().toLocaleTimeString()}${anchor}${state.paused ? " · paused" : ""}`, false);
      document.body.dataset.updated = String(body.now_ms);
    } catch (err) {
      setStatus(`could not refresh: ${err.message}`, true);
    } finally {
      state.busy = false;
    }
  }

  function render(body) {
    renderFigures(body);
    renderCharts(body);
    renderVariantTable(body);
    renderDeadLetters(body);
  }

  function schedule() {
    clearTimeout(state.timer);
    if (!state.paused) state.timer = setTimeout(async () => { await refresh(); schedule(); }, REFRESH_MS);
  }

  function readUrl() {
    const params = new URLSearchParams(location.search);
    for (const name of ["minutes", "anchor", "context"]) {
      const value = params.get(name);
      if (value && [...$(name).options].some((o) => o.value === value)) $(name).value = value;
    }
    const experiment = params.get("experiment");
    if (experiment && /^(~|[A-Za-z0-9_-]{1,32})$/.test(experiment)) {
      updateExperimentChoices([experiment]);
      $("experiment").value = experiment;
    }
  }

  function writeUrl() {
    const params = query();
    params.set("context", $("context").value);
    history.replaceState(null, "", `?${params}`);
  }

  function init() {
    readUrl();
    for (const id of ["experiment", "minutes", "anchor"]) {
      $(id).addEventListener("change", () => { writeUrl(); refresh(); });
    }
    // Changing the context re-draws what the page already has.
    $("context").addEventListener("change", () => { writeUrl(); if (state.lastBody) render(state.lastBody); });
    $("pause").addEventListener("click", () => {
      state.paused = !state.paused;
      $("pause").setAttribute("aria-pressed", String(state.paused));
      $("pause").textContent = state.paused ? "Resume" : "Pause";
      if (!state.paused) refresh();
      schedule();
    });
    $("controls").addEventListener("submit", (e) => e.preventDefault());
    refresh().then(schedule);
  }

  document.addEventListener("DOMContentLoaded", init);
})();
