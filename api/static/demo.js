// flowrec demo shop: browse the catalog, send events, watch the user's list change.
// Plain browser JavaScript, no build step.  Everything shown comes from the public API;
// data is rendered with textContent only.
//
// Feedback, as a shop frontend should send it: every list shown (the user's list, similar
// items, trending) is reported once as an `impression` with its response's rec_id, items and
// positions; a click on an item of a list, and the cart or purchase of an item reached that
// way, carry the list's rec_id and the item's position, so the job attributes them to it.
"use strict";

(function () {
  const config = window.FLOWREC || {};
  const POLL_MS = config.pollMs || 500;
  const STATS_MS = 1000;
  const TRENDING_MS = 2000;
  const PAGE_SIZE = 24;
  const ID_RE = /^[A-Za-z0-9_.:@\-]{1,128}$/;

  const state = {
    user: null,
    apiKey: config.apiKey || localStorage.getItem("flowrec.apiKey") || "",
    category: null,
    offset: 0,
    context: "home",
    anchor: null,
    items: new Map(),        // item id -> catalog entry (or null when unknown)
    asked: new Set(),        // item ids already looked up in /v1/items
    shownRecs: new Set(),    // items shown in the last render, to highlight newcomers
    lastRecs: null,          // the last list response, to skip re-rendering an unchanged list
    shown: {},               // list element id -> {recId, items} of what it shows (reported as an impression)
    origin: new Map(),       // item id -> {recId, position} of the list it was clicked in
    sent: 0,
    lastStats: null,         // {now, events} of the previous stats sample, for events/s
    busy: { recs: false, stats: false, trending: false },
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) node.append(child);
    return node;
  };

  async function api(path, options) {
    const response = await fetch(path, options);
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    if (!response.ok) {
      const detail = body && body.detail ? body.detail : response.statusText;
      throw new Error(`${response.status}: ${detail}`);
    }
    return body;
  }

  function status(text, isError) {
    const node = $("last-post");
    node.textContent = text;
    node.className = isError ? "status error" : "status";
  }

  function title(id) {
    const item = state.items.get(id);
    return item && item.title ? item.title : id;
  }

  // Catalog entries for ids we have not seen in the shop window (one batch request).
  async function learnItems(ids) {
    const missing = ids.filter((id) => !state.items.has(id) && !state.asked.has(id)).slice(0, 100);
    if (!missing.length) return;
    missing.forEach((id) => state.asked.add(id));
    try {
      const body = await api(`/v1/items?ids=${encodeURIComponent(missing.join(","))}`);
      for (const [id, item] of Object.entries(body.items)) if (item) state.items.set(id, item);
    } catch (err) { /* titles are cosmetic */ }
  }

  // ---- user -------------------------------------------------------------------------
  function rememberUser(user) {
    const recent = JSON.parse(localStorage.getItem("flowrec.users") || "[]").filter((u) => u !== user);
    recent.unshift(user);
    localStorage.setItem("flowrec.users", JSON.stringify(recent.slice(0, 10)));
    const list = $("recent-users");
    list.replaceChildren(...recent.slice(0, 10).map((u) => el("option", { value: u })));
  }

  function setUser(user) {
    if (!ID_RE.test(user)) { status("user ids are 1-128 chars of A-Z a-z 0-9 _ . : @ -", true); return; }
    state.user = user;
    state.shownRecs = new Set();
    state.lastRecs = null;
    state.shown = {};           // rec_ids are bound to their user: the lists are fetched again for this one
    state.origin = new Map();
    $("user-input").value = user;
    $("current-user").textContent = `shopping as ${user}`;
    $("recs").replaceChildren();
    rememberUser(user);
    history.replaceState(null, "", `?user=${encodeURIComponent(user)}`);
    pollRecs();
  }

  function newVisitor() {
    const random = Math.random().toString(36).slice(2, 10);
    setUser(`visitor-${random}`);
  }

  // ---- shop window ------------------------------------------------------------------
  async function loadCategories() {
    const categories = await api("/v1/catalog/categories");
    const nav = $("categories");
    const all = el("button", { type: "button", class: "active", textContent: "all" });
    all.addEventListener("click", () => chooseCategory(null, all));
    nav.replaceChildren(all);
    for (const c of categories) {
      const b = el("button", { type: "button", textContent: `${c.category} (${c.items})`, "data-category": c.category });
      b.addEventListener("click", () => chooseCategory(c.category, b));
      nav.append(b);
    }
    if (!categories.length) $("shop-note").textContent = "No catalog loaded: start the server with --catalog FILE to browse items.";
  }

  function chooseCategory(category, button) {
    state.category = category;
    state.offset = 0;
    for (const b of $("categories").children) b.classList.toggle("active", b === button);
    $("products").replaceChildren();
    loadProducts();
    pollTrending();
  }

  async function loadProducts() {
    const query = new URLSearchParams({ offset: state.offset, limit: PAGE_SIZE });
    if (state.category) query.set("category", state.category);
    const page = await api(`/v1/catalog?${query}`);
    for (const item of page.items) {
      state.items.set(item.item_id, item);
      $("products").append(productCard(item));
    }
    state.offset += page.items.length;
    $("more").hidden = state.offset >= page.total;
  }

  function productCard(item) {
    const card = el("div", { class: "product", "data-item": item.item_id });
    const name = el("span", { class: "title", textContent: item.title || item.item_id, title: "view this item" });
    name.addEventListener("click", () => view(item.item_id, card));
    const price = typeof item.price === "number" ? ` · ${item.price.toFixed(2)}` : "";
    const meta = el("span", { class: "meta", textContent: `${item.item_id} · ${item.category || "uncategorised"}${item.brand ? " · " + item.brand : ""}${price}` });
    const actions = el("div", { class: "actions" });
    const buttons = [["view", "click"], ["add to cart", "add_to_cart"], ["buy", "purchase"]];
    for (const [label, eventType] of buttons) {
      const b = el("button", { type: "button", textContent: label, class: eventType.replace(/_/g, "-") });
      b.addEventListener("click", () => (eventType === "click" ? view(item.item_id, card) : send(eventType, item.item_id)));
      actions.append(b);
    }
    card.append(name, meta, actions);
    return card;
  }

  function view(itemId, card) {
    for (const c of document.querySelectorAll(".product.selected")) c.classList.remove("selected");
    if (card) card.classList.add("selected");
    send("click", itemId);
    showSimilar(itemId);
  }

  // A click on an item of a shown list: attributed to that list (its rec_id and the item's position).
  function viewFromList(listId, itemId, position) {
    const shown = state.shown[listId];
    if (shown) state.origin.set(itemId, { recId: shown.recId, position });
    send("click", itemId);
    showSimilar(itemId);
  }

  // ---- events -----------------------------------------------------------------------
  async function send(eventType, itemId) {
    if (!state.user) { status("pick a user first", true); return; }
    if (!state.apiKey) { status("set an API key (top right) to send events", true); $("key-box").open = true; return; }
    // No ts: the server stamps its receive time, so a skewed browser clock cannot matter.
    const event = { user_id: state.user, item_id: itemId, event_type: eventType };
    const origin = state.origin.get(itemId);
    if (origin) { event.rec_id = origin.recId; event.position = origin.position; }
    try {
      const body = await api("/v1/events", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": `Bearer ${state.apiKey}` },
        body: JSON.stringify(event),
      });
      state.sent += body.accepted;
      $("c-sent").textContent = String(state.sent);
      status(`sent ${eventType} ${itemId} ✓`, false);
    } catch (err) {
      status(`${eventType} ${itemId} failed: ${err.message}`, true);
    }
  }

  // ---- lists ------------------------------------------------------------------------
  // "because you viewed i000123" -> "because you viewed Red shoe" for items the page knows.
  function readable(reason) {
    return reason.replace(/[A-Za-z0-9_.:@\-]+/g, (token) => (state.items.get(token) && state.items.get(token).title) || token);
  }

  // Report what a list element now shows, once per change of its items (a poll that returns the
  // same items under a new rec_id is not shown again).  Needs a user: rec_ids are bound to one.
  async function reportShown(listId, body) {
    const items = body.items.map((i) => i.item);
    const before = state.shown[listId];
    if (before && before.items.join(",") === items.join(",")) return;
    state.shown[listId] = { recId: body.rec_id, items };
    $(listId).dataset.recId = body.rec_id;
    if (!items.length || !state.user || !state.apiKey) return;
    try {
      await api("/v1/events", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": `Bearer ${state.apiKey}` },
        body: JSON.stringify({ user_id: state.user, event_type: "impression", rec_id: body.rec_id, items, positions: items.map((_, k) => k) }),
      });
    } catch (err) {
      status(`reporting the ${listId} list failed: ${err.message}`, true);
    }
  }

  function renderList(node, items, highlight) {
    const rows = items.map((entry, position) => {
      const li = el("li", { "data-item": entry.item });
      const name = el("span", { class: "name", textContent: title(entry.item), title: "view this item" });
      name.addEventListener("click", () => viewFromList(node.id, entry.item, position));
      li.append(name, el("span", { class: "score", textContent: entry.score.toFixed(3) }));
      if (entry.reason) li.append(el("span", { class: "reason", textContent: readable(entry.reason), title: entry.reason }));
      if (highlight && !highlight.has(entry.item)) li.classList.add("new");
      return li;
    });
    node.replaceChildren(...rows);
  }

  function age(ms) {
    if (ms == null) return "–";
    if (ms < 1000) return `${ms} ms`;
    if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.round(ms / 60000)} min`;
  }

  async function pollRecs() {
    if (!state.user || state.busy.recs) return;
    state.busy.recs = true;
    try {
      const user = state.user;
      const query = new URLSearchParams({ n: 10, context: state.context });
      const body = await api(`/v1/users/${encodeURIComponent(user)}/recommendations?${query}`);
      if (user !== state.user) return;
      // Every response has a new rec_id: the list is unchanged when all else is.
      const fingerprint = JSON.stringify({ ...body, rec_id: null });
      if (fingerprint === state.lastRecs) return;  // unchanged: leave the DOM alone
      state.lastRecs = fingerprint;
      await learnItems(body.items.map((i) => i.item));
      const highlight = state.shownRecs.size ? state.shownRecs : null;
      renderList($("recs"), body.items, highlight);
      reportShown("recs", body);
      state.shownRecs = new Set(body.items.map((i) => i.item));
      const when = body.ts ? `list from event time ${new Date(body.ts).toLocaleTimeString()}` : "no list yet";
      $("recs-meta").textContent = body.cold_start ? `new here: trending until the job has seen ${user} · ${when}` : when;
    } catch (err) {
      $("recs-meta").textContent = `could not load: ${err.message}`;
    } finally {
      state.busy.recs = false;
    }
  }

  async function showSimilar(itemId) {
    state.anchor = itemId;
    $("similar-anchor").textContent = title(itemId);
    try {
      const query = new URLSearchParams({ n: 6 });
      if (state.user) query.set("user_id", state.user);  // binds the list's rec_id to the shopper
      const body = await api(`/v1/items/${encodeURIComponent(itemId)}/similar?${query}`);
      await learnItems(body.items.map((i) => i.item));
      renderList($("similar"), body.items, null);
      reportShown("similar", body);
      $("similar-hint").textContent = body.items.length ? "" : "no similar items yet";
    } catch (err) {
      $("similar").replaceChildren();
      $("similar-hint").textContent = err.message;
    }
  }

  async function pollTrending() {
    if (state.busy.trending) return;
    state.busy.trending = true;
    try {
      const query = new URLSearchParams({ n: 8 });
      if (state.category) query.set("category", state.category);
      if (state.user) query.set("user_id", state.user);
      $("trending-scope").textContent = state.category ? `in ${state.category}` : "everywhere";
      const body = await api(`/v1/trending?${query}`);
      await learnItems(body.items.map((i) => i.item));
      renderList($("trending"), body.items, null);
      reportShown("trending", body);
    } catch (err) {
      $("trending").replaceChildren(el("li", { textContent: err.message }));
    } finally {
      state.busy.trending = false;
    }
  }

  async function pollStats() {
    if (state.busy.stats) return;
    state.busy.stats = true;
    try {
      const body = await api("/v1/stats");
      const c = body.counters;
      const events = Number(c.events || 0);
      $("c-events").textContent = String(events);
      $("c-late").textContent = String(c.late_events || 0);
      $("c-dead").textContent = String(c.dead_letters || 0);
      $("c-fresh").textContent = age(body.freshness_ms);
      const previous = state.lastStats;
      if (previous && body.now_ms > previous.now) {
        const rate = ((events - previous.events) * 1000) / (body.now_ms - previous.now);
        $("c-rate").textContent = rate.toFixed(rate < 10 ? 1 : 0);
      }
      state.lastStats = { now: body.now_ms, events };
    } catch (err) {
      $("c-events").textContent = "?";
    } finally {
      state.busy.stats = false;
    }
  }

  // ---- wiring -----------------------------------------------------------------------
  function start() {
    $("api-key").value = state.apiKey;
    $("api-key").addEventListener("change", (e) => {
      state.apiKey = e.target.value.trim();
      localStorage.setItem("flowrec.apiKey", state.apiKey);
    });
    $("user-form").addEventListener("submit", (e) => { e.preventDefault(); setUser($("user-input").value.trim()); });
    $("new-user").addEventListener("click", newVisitor);
    $("more").addEventListener("click", loadProducts);
    for (const tab of document.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => {
        state.context = tab.dataset.context;
        state.shownRecs = new Set();
        state.lastRecs = null;
        delete state.shown.recs;  // a new list (another context): reported when it shows
        for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
        pollRecs();
      });
    }
    // Users from earlier visits fill the suggestions.
    const recent = JSON.parse(localStorage.getItem("flowrec.users") || "[]");
    $("recent-users").replaceChildren(...recent.map((u) => el("option", { value: u })));

    loadCategories().then(loadProducts).catch((err) => { $("shop-note").textContent = `catalog: ${err.message}`; });
    const fromUrl = new URLSearchParams(location.search).get("user");
    if (fromUrl) setUser(fromUrl);
    pollTrending();
    pollStats();
    setInterval(pollRecs, POLL_MS);
    setInterval(pollStats, STATS_MS);
    setInterval(pollTrending, TRENDING_MS);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
