// beanq web console: one page, drawn from the JSON API under /api/v1/ (see docs/http.md).
// No framework, no build step, no CDN. Views poll the API while they are shown; charts are
// SVG drawn here. Actions are POSTs carrying the session's CSRF token.
"use strict";

const API = "/api/v1";
const POLL_OVERVIEW = 1000; // ms
const POLL_OTHER = 2000;
const TUBES_PAGE = 50;
const JOBS_PAGE = 100;
const CONNS_PAGE = 100;
const SCHEDULES_PAGE = 50;
const PREVIEW = 48; // bytes of body shown per job in a tube's list
const CHART_SECONDS = 300;
const STATES = ["ready", "reserved", "delayed", "buried"];
const SVG = "http://www.w3.org/2000/svg";

let session = { auth: "none", actions: false, bodies: false, csrf: null, via: "open" };
let timer = null;
// bumped whenever a view starts drawing: an answer that comes after a newer draw started
// (an older poll, or another view's) is dropped
let generation = 0;

// --- small helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  for (const child of children) el.append(child instanceof Node ? child : String(child));
  return el;
}

function num(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

function rate(n) {
  if (n === null || n === undefined) return "–";
  if (n === 0) return "0";
  return n >= 100 ? Math.round(n).toLocaleString("en-US") : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  let t = Math.max(0, Math.floor(seconds));
  if (t < 60) return `${t}s`;
  const two = (big, bigUnit, small, smallUnit) => (small ? `${big}${bigUnit} ${small}${smallUnit}` : `${big}${bigUnit}`);
  if (t < 3600) return two(Math.floor(t / 60), "m", t % 60, "s");
  if (t < 86400) return two(Math.floor(t / 3600), "h", Math.floor((t % 3600) / 60), "m");
  return two(Math.floor(t / 86400), "d", Math.floor((t % 86400) / 3600), "h");
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

function enc(name) {
  return encodeURIComponent(name);
}

function flash(text, kind) {
  const el = document.getElementById("flash");
  el.textContent = text;
  el.className = kind || "ok";
  el.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => (el.hidden = true), 6000);
}

class ApiError extends Error {}

async function api(path, options) {
  const response = await fetch(API + path, Object.assign({ credentials: "same-origin" }, options));
  if (response.status === 401) {
    if (session.auth === "token" || path === "/session") location.assign("/login");
    throw new ApiError("not logged in");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    throw new ApiError(`${response.status} ${response.statusText}`);
  }
  if (!response.ok) throw new ApiError(body.message || body.error || response.statusText);
  return body;
}

async function act(path, params, done) {
  try {
    const result = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf || "" },
      body: JSON.stringify(params || {}),
    });
    flash(done(result), "ok");
    redraw();
    return result;
  } catch (e) {
    flash(`Failed: ${e.message}`, "error");
    return null;
  }
}

// A button that asks once more before doing something that cannot be undone.
function confirmButton(label, question, onConfirm, attrs) {
  let armed = null;
  const button = h("button", Object.assign({ type: "button", class: "danger" }, attrs || {}), label);
  button.addEventListener("click", () => {
    if (armed) {
      clearTimeout(armed);
      armed = null;
      button.textContent = label;
      button.classList.remove("armed");
      onConfirm();
      return;
    }
    button.textContent = question;
    button.classList.add("armed");
    armed = setTimeout(() => {
      armed = null;
      button.textContent = label;
      button.classList.remove("armed");
    }, 4000);
  });
  return button;
}

function stat(label, value, key, hint) {
  return h(
    "div",
    { class: "stat", "data-stat": key, title: hint || null },
    h("div", { class: "value", "data-value": value }, typeof value === "number" ? num(value) : value),
    h("div", { class: "label" }, label),
  );
}

function table(columns, rows, attrs) {
  return h(
    "table",
    attrs || {},
    h("thead", {}, h("tr", {}, columns.map((c) => (c instanceof Node ? c : h("th", {}, c))))),
    h("tbody", {}, rows),
  );
}

function cell(col, value, text, cls) {
  return h("td", { "data-col": col, "data-value": value, class: cls || null }, text === undefined ? num(value) : text);
}

// --- routing and polling ---------------------------------------------------------------------

const views = { overview, tubes, tube, job, schedules, connections };
let current = null; // { view, refresh }

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/");
  const params = new URLSearchParams(query || "");
  if (parts[0] === "tubes") return ["tubes", {}, params];
  if (parts[0] === "tube" && parts.length > 1) return ["tube", { name: decodeURIComponent(parts.slice(1).join("/")) }, params];
  if (parts[0] === "job" && parts[1]) return ["job", { id: parts[1] }, params];
  if (parts[0] === "schedules") return ["schedules", {}, params];
  if (parts[0] === "connections") return ["connections", {}, params];
  return ["overview", {}, params];
}

function show() {
  const [name, args, params] = route();
  generation += 1;
  clearInterval(timer);
  for (const a of document.querySelectorAll("nav a")) {
    const nav = a.getAttribute("data-nav");
    a.classList.toggle("active", nav === name || (nav === "tubes" && name === "tube"));
  }
  const main = document.getElementById("main");
  main.replaceChildren();
  main.dataset.view = location.hash || "#/";
  const refresh = views[name](main, args, params);
  current = { refresh };
  const tick = () => {
    if (document.querySelector("button.armed")) return; // (a redraw would disarm it)
    redraw();
  };
  tick();
  // (schedules: their relative times move every second)
  timer = setInterval(tick, name === "overview" || name === "schedules" ? POLL_OVERVIEW : POLL_OTHER);
}

// Draw the current view again now; only the newest draw lands.
async function redraw() {
  if (!current) return;
  generation += 1;
  const mine = generation;
  try {
    await current.refresh(mine);
  } catch (e) {
    if (mine === generation && !(e instanceof ApiError && e.message === "not logged in")) {
      flash(`Cannot reach the server: ${e.message}`, "error");
    }
  }
}

function go(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

// --- header ----------------------------------------------------------------------------------

function header(stats) {
  const el = document.getElementById("server");
  el.replaceChildren(h("span", { class: "muted" }, `${stats.version} · ${stats.hostname} · up ${duration(stats.uptime)}`));
  if (stats.draining) el.append(h("span", { class: "badge warn", id: "draining-badge" }, "draining"));
}

// --- overview --------------------------------------------------------------------------------

function overview(main) {
  const cards = h("section", { class: "stats", id: "stats" });
  const controls = h("section", { class: "controls", id: "drain-controls" });
  const charts = h("section", { class: "charts", id: "charts" });
  main.append(h("h1", {}, "Overview"), cards, controls, h("h2", {}, "Per second, last 5 minutes"), charts);
  const chartDefs = [
    ["puts", "Puts", 1],
    ["reserves", "Reserves", 2],
    ["deletes", "Deletes", 3],
    ["timeouts", "Timeouts", 4],
  ];
  return async (mine) => {
    const [stats, rates] = await Promise.all([api("/stats"), api(`/rates?seconds=${CHART_SECONDS}`)]);
    if (mine !== generation) return;
    header(stats);
    cards.replaceChildren(
      stat("ready", stats["current-jobs-ready"], "current-jobs-ready"),
      stat("urgent", stats["current-jobs-urgent"], "current-jobs-urgent", "ready with priority < 1024"),
      stat("reserved", stats["current-jobs-reserved"], "current-jobs-reserved"),
      stat("delayed", stats["current-jobs-delayed"], "current-jobs-delayed"),
      stat("buried", stats["current-jobs-buried"], "current-jobs-buried"),
      stat("tubes", stats["current-tubes"], "current-tubes"),
      stat("connections", stats["current-connections"], "current-connections"),
      stat("producers", stats["current-producers"], "current-producers"),
      stat("workers", stats["current-workers"], "current-workers"),
      stat("waiting", stats["current-waiting"], "current-waiting", "connections waiting in reserve"),
      stat("jobs made", stats["total-jobs"], "total-jobs"),
      stat("timeouts", stats["job-timeouts"], "job-timeouts"),
    );
    controls.replaceChildren(
      h("span", { class: stats.draining ? "badge warn" : "badge ok", "data-draining": String(stats.draining) },
        stats.draining ? "Drain mode: puts are refused" : "Taking puts"),
      session.actions
        ? h("button", {
            type: "button",
            id: "drain-toggle",
            class: stats.draining ? "" : "danger",
            onclick: () => act("/drain", { on: !stats.draining }, (r) => (r.draining ? "Drain mode on" : "Drain mode off")),
          }, stats.draining ? "Leave drain mode" : "Enter drain mode")
        : null,
    );
    const points = rates.points.filter((p) => p[0] >= -CHART_SECONDS);
    charts.replaceChildren(...chartDefs.map(([key, label, index]) => chart(key, label, points, index)));
  };
}

function chart(key, label, points, index) {
  const W = 600, H = 150, L = 46, R = 8, T = 10, B = 22;
  const values = points.map((p) => p[index]);
  const top = niceMax(Math.max(1, ...values));
  const x = (age) => L + ((age + CHART_SECONDS) / CHART_SECONDS) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": `${label} per second` });
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, shortNum(v)));
  }
  for (const age of [-300, -240, -180, -120, -60, 0]) {
    svg.append(s("text", { x: x(age), y: H - 6, class: "axis", "text-anchor": age === -300 ? "start" : age === 0 ? "end" : "middle" },
      age === 0 ? "now" : `${age / 60}m`));
  }
  if (points.length > 1) {
    const line = points.map((p) => `${x(p[0]).toFixed(1)},${y(p[index]).toFixed(1)}`).join(" ");
    const first = x(points[0][0]).toFixed(1), last = x(points[points.length - 1][0]).toFixed(1);
    svg.append(s("path", { d: `M${first},${y(0)} L${line.replaceAll(" ", " L")} L${last},${y(0)} Z`, class: "area" }));
    svg.append(s("polyline", { points: line, class: "line" }));
  }
  const now = values.length ? values[values.length - 1] : 0;
  return h("figure", { class: "card chart-card", "data-chart": key },
    h("figcaption", {}, h("span", {}, label), h("strong", { "data-value": now }, `${rate(now)}/s`)),
    svg);
}

function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function shortNum(v) {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(2)}k`;
  return `${+v.toFixed(1)}`;
}

// --- tubes -----------------------------------------------------------------------------------

const TUBE_COLUMNS = [
  ["name", "Tube", "name"],
  ["current-jobs-ready", "Ready", "ready"],
  ["current-jobs-reserved", "Reserved", "reserved"],
  ["current-jobs-delayed", "Delayed", "delayed"],
  ["current-jobs-buried", "Buried", "buried"],
  ["current-waiting", "Waiting", "waiting"],
  ["puts-per-second", "Puts/s", "puts-per-second"],
  ["reserves-per-second", "Reserves/s", "reserves-per-second"],
  ["deletes-per-second", "Deletes/s", "deletes-per-second"],
  ["oldest-ready-age", "Oldest ready", "oldest"],
  ["pause-time-left", "Paused", "paused"],
];

function tubes(main, args, params) {
  const state = {
    q: params.get("q") || "",
    sort: params.get("sort") || "name",
    order: params.get("order") || "asc",
    offset: Number(params.get("offset") || 0),
  };
  const filter = h("input", { type: "search", id: "tube-filter", placeholder: "Filter tubes by name", value: state.q });
  const summary = h("span", { class: "muted", id: "tubes-summary" });
  const pager = h("div", { class: "pager" });
  const holder = h("div", { class: "table-wrap" });
  main.append(h("h1", {}, "Tubes"), h("div", { class: "toolbar" }, filter, summary), holder, pager);
  let typing = null;
  filter.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.q = filter.value;
      state.offset = 0;
      redraw();
    }, 200);
  });
  const setSort = (key) => {
    if (state.sort === key) state.order = state.order === "asc" ? "desc" : "asc";
    else {
      state.sort = key;
      state.order = key === "name" ? "asc" : "desc";
    }
    state.offset = 0;
    redraw();
  };
  async function refresh(mine) {
    const query = new URLSearchParams({ q: state.q, sort: state.sort, order: state.order, offset: state.offset, limit: TUBES_PAGE });
    const data = await api(`/tubes?${query}`);
    if (mine !== generation) return;
    const head = TUBE_COLUMNS.map(([field, label, key]) =>
      h("th", {
        class: `sortable${state.sort === key ? " sorted" : ""}${field === "name" ? "" : " num"}`,
        "data-sort": key, tabindex: 0, "aria-sort": state.sort === key ? (state.order === "asc" ? "ascending" : "descending") : null,
        onclick: () => setSort(key), onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); setSort(key); } },
      },
        label, state.sort === key ? (state.order === "asc" ? " ▲" : " ▼") : ""));
    const rows = data.tubes.map((t) => h("tr", { "data-tube": t.name },
      h("td", { "data-col": "name", "data-value": t.name }, h("a", { href: `#/tube/${enc(t.name)}` }, t.name)),
      cell("current-jobs-ready", t["current-jobs-ready"], undefined, "num"),
      cell("current-jobs-reserved", t["current-jobs-reserved"], undefined, "num"),
      cell("current-jobs-delayed", t["current-jobs-delayed"], undefined, "num"),
      cell("current-jobs-buried", t["current-jobs-buried"], undefined, t["current-jobs-buried"] ? "num warn" : "num"),
      cell("current-waiting", t["current-waiting"], undefined, "num"),
      cell("puts-per-second", t["puts-per-second"], rate(t["puts-per-second"]), "num"),
      cell("reserves-per-second", t["reserves-per-second"], rate(t["reserves-per-second"]), "num"),
      cell("deletes-per-second", t["deletes-per-second"], rate(t["deletes-per-second"]), "num"),
      cell("oldest-ready-age", t["oldest-ready-age"], t["current-jobs-ready"] ? duration(t["oldest-ready-age"]) : "–", "num"),
      cell("pause-time-left", t["pause-time-left"], t.pause ? `${duration(t["pause-time-left"])} left` : "", "num"),
    ));
    holder.replaceChildren(table(head, rows, { id: "tubes-table", class: "data" }));
    const end = Math.min(data.offset + data.tubes.length, data.matched);
    summary.textContent = data.matched
      ? `${num(data.offset + 1)}–${num(end)} of ${num(data.matched)}${data.matched !== data.total ? ` matching (${num(data.total)} tubes)` : " tubes"}`
      : `no tube matches (${num(data.total)} tubes)`;
    pager.replaceChildren(
      h("button", { type: "button", id: "tubes-prev", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - TUBES_PAGE); redraw(); } }, "‹ Previous"),
      h("button", { type: "button", id: "tubes-next", disabled: end >= data.matched, onclick: () => { state.offset += TUBES_PAGE; redraw(); } }, "Next ›"),
    );
  }
  return refresh;
}

// --- one tube --------------------------------------------------------------------------------

function tube(main, args, params) {
  const name = args.name;
  const view = {
    state: STATES.includes(params.get("state")) ? params.get("state") : "ready",
    cursors: [0], // the `after` of each page seen, for going back
    mode: "text",
  };
  const counts = h("section", { class: "stats", id: "tube-stats" });
  const actions = h("section", { class: "actions", id: "tube-actions" });
  const tabs = h("div", { class: "tabs", id: "state-tabs", role: "tablist" });
  const jobsHolder = h("div", { class: "table-wrap", id: "jobs" });
  const pager = h("div", { class: "pager" });
  const modes = h("div", { class: "modes" }, "Body preview: ",
    ...["text", "hex"].map((m) => h("label", {}, h("input", { type: "radio", name: "mode", value: m, checked: m === view.mode, onchange: () => { view.mode = m; redraw(); } }), ` ${m}`)));
  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/tubes" }, "Tubes"), " / "),
    h("h1", {}, name),
    counts, actions, tabs,
    h("div", { class: "toolbar" }, session.bodies ? modes : h("span", { class: "muted" }, "Job bodies are hidden (see --http-show-bodies)")),
    jobsHolder, pager,
  );
  if (session.actions) actions.append(...tubeActions(name, () => view.state));
  let missing = false;

  async function refresh(mine) {
    let t;
    try {
      t = await api(`/tubes/${enc(name)}`);
    } catch (e) {
      if (mine !== generation) return;
      if (!missing) {
        missing = true;
        counts.replaceChildren(h("p", { class: "muted", id: "tube-gone" }, `No tube ${name} (a tube exists while it holds jobs or a connection uses or watches it).`));
        tabs.replaceChildren();
        jobsHolder.replaceChildren();
        pager.replaceChildren();
      }
      return;
    }
    missing = false;
    const after = view.cursors[view.cursors.length - 1];
    const query = new URLSearchParams({ state: view.state, after, limit: JOBS_PAGE });
    if (session.bodies) query.set("preview", PREVIEW);
    const page = await api(`/tubes/${enc(name)}/jobs?${query}`);
    if (mine !== generation) return;
    counts.replaceChildren(
      stat("ready", t["current-jobs-ready"], "current-jobs-ready"),
      stat("urgent", t["current-jobs-urgent"], "current-jobs-urgent"),
      stat("reserved", t["current-jobs-reserved"], "current-jobs-reserved"),
      stat("delayed", t["current-jobs-delayed"], "current-jobs-delayed"),
      stat("buried", t["current-jobs-buried"], "current-jobs-buried"),
      stat("waiting", t["current-waiting"], "current-waiting"),
      stat("watching", t["current-watching"], "current-watching"),
      stat("oldest ready", t["current-jobs-ready"] ? duration(t["oldest-ready-age"]) : "–", "oldest-ready-age"),
      stat("paused", t.pause ? `${duration(t["pause-time-left"])} left` : "no", "paused"),
    );
    tabs.replaceChildren(...STATES.map((st) => h("button", {
      type: "button", role: "tab", "data-state": st, "aria-selected": st === view.state ? "true" : "false",
      class: st === view.state ? "tab active" : "tab",
      onclick: () => { view.state = st; view.cursors = [0]; redraw(); },
    }, `${st} `, h("span", { class: "count" }, num(t[`current-jobs-${st}`])))));
    jobsHolder.replaceChildren(jobTable(page.jobs, view));
    const first = view.cursors.length === 1;
    pager.replaceChildren(
      h("button", { type: "button", id: "jobs-prev", disabled: first, onclick: () => { view.cursors.pop(); redraw(); } }, "‹ Previous"),
      h("span", { class: "muted", id: "jobs-page" }, `page ${view.cursors.length}`),
      h("button", { type: "button", id: "jobs-next", disabled: page.next_after === null, onclick: () => { view.cursors.push(page.next_after); redraw(); } }, "Next ›"),
    );
  }
  return refresh;
}

function tubeActions(name, currentState) {
  const kickN = h("input", { type: "number", min: 1, value: 10, id: "kick-bound", class: "small" });
  const pauseS = h("input", { type: "number", min: 1, value: 60, id: "pause-seconds", class: "small" });
  const flushState = h("select", { id: "flush-state" }, ["buried", "ready", "delayed", "all"].map((v) => h("option", { value: v }, v)));
  const moveState = h("select", { id: "move-state" }, ["buried", "ready", "delayed"].map((v) => h("option", { value: v }, v)));
  const moveLimit = h("input", { type: "number", min: 1, value: 100, id: "move-limit", class: "small" });
  const moveTo = h("input", { type: "text", id: "move-to", placeholder: "other tube", class: "medium" });
  const base = `/tubes/${enc(name)}`;
  return [
    h("div", { class: "action" },
      h("button", { type: "button", id: "kick", onclick: () => act(`${base}/kick`, { bound: Number(kickN.value) }, (r) => `Kicked ${num(r.kicked)} job${r.kicked === 1 ? "" : "s"}`) }, "Kick"),
      kickN, h("span", { class: "muted" }, "buried jobs, or delayed ones if none is buried")),
    h("div", { class: "action" },
      h("button", { type: "button", id: "pause", onclick: () => act(`${base}/pause`, { seconds: Number(pauseS.value) }, () => `Paused ${name} for ${pauseS.value}s`) }, "Pause"),
      pauseS, h("span", { class: "muted" }, "seconds"),
      h("button", { type: "button", id: "unpause", onclick: () => act(`${base}/pause`, { seconds: 0 }, () => `Unpaused ${name}`) }, "Unpause")),
    h("div", { class: "action" },
      confirmButton("Flush", "Really flush?", () => act(`${base}/flush`, { state: flushState.value }, (r) => `Flushed ${num(r.flushed)} job${r.flushed === 1 ? "" : "s"}`), { id: "flush" }),
      flushState, h("span", { class: "muted" }, "jobs (deleted; reserved ones stay)")),
    h("div", { class: "action" },
      h("button", { type: "button", id: "move", onclick: () => {
        if (!moveTo.value) return flash("Name the tube to move jobs to", "error");
        act(`${base}/move`, { to: moveTo.value, state: moveState.value, limit: Number(moveLimit.value) }, (r) => `Moved ${num(r.moved)} job${r.moved === 1 ? "" : "s"} to ${moveTo.value}`);
      } }, "Move"),
      moveLimit, moveState, h("span", { class: "muted" }, "jobs to"), moveTo),
  ];
}

function jobTable(jobs, view) {
  if (!jobs.length) return h("p", { class: "muted empty", id: "no-jobs" }, `No ${view.state} jobs.`);
  const timeCol = view.state === "reserved" ? "TTR left" : view.state === "delayed" ? "Delay left" : "Delay";
  const columns = ["Id", "Pri", "Age", timeCol, "TTR", "Reserves", "Releases", "Timeouts", "Buries", "Kicks", "Size"];
  if (session.bodies) columns.push("Body");
  if (session.actions) columns.push("");
  const rows = jobs.map((j) => {
    const timeValue = view.state === "reserved" || view.state === "delayed" ? j["time-left"] : j.delay;
    const row = h("tr", { "data-job": j.id },
      h("td", { "data-col": "id" }, h("a", { href: `#/job/${j.id}` }, j.id)),
      cell("pri", j.pri, undefined, j.urgent ? "num urgent" : "num"),
      cell("age", j.age, duration(j.age), "num"),
      cell("time", timeValue, duration(timeValue), "num"),
      cell("ttr", j.ttr, duration(j.ttr), "num"),
      cell("reserves", j.reserves, undefined, "num"),
      cell("releases", j.releases, undefined, "num"),
      cell("timeouts", j.timeouts, undefined, "num"),
      cell("buries", j.buries, undefined, "num"),
      cell("kicks", j.kicks, undefined, "num"),
      cell("size", j.size, bytes(j.size), "num"),
    );
    if (session.bodies) {
      const raw = j.preview_base64 === undefined ? new Uint8Array() : b64bytes(j.preview_base64);
      const text = view.mode === "hex" ? hex(raw, false) : printable(raw);
      row.append(h("td", { class: "preview", "data-col": "preview" }, text + (j.size > raw.length ? " …" : "")));
    }
    if (session.actions) row.append(h("td", { class: "row-actions" }, jobButtons(j, false)));
    return row;
  });
  return table(columns.map((c, i) => h("th", { class: i === 0 || c === "Body" || c === "" ? "" : "num" }, c)), rows, { class: "data", id: "jobs-table" });
}

function jobButtons(j, big) {
  const out = [];
  if (j.state === "buried" || j.state === "delayed") {
    out.push(h("button", { type: "button", class: big ? "" : "small", "data-action": "kick-job", onclick: () => act(`/jobs/${j.id}/kick`, {}, () => `Kicked job ${j.id}`) }, "Kick"));
  }
  if (j.state !== "reserved") {
    out.push(confirmButton("Delete", "Sure?", () => act(`/jobs/${j.id}/delete`, {}, () => `Deleted job ${j.id}`).then((r) => { if (r && big) go(`#/tube/${enc(j.tube)}`); }),
      { class: big ? "danger" : "danger small", "data-action": "delete-job" }));
  }
  return out;
}

// --- bodies ----------------------------------------------------------------------------------

function b64bytes(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function printable(raw) {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(raw);
  return text.replace(/[\u0000-\u001f\u007f]/g, (c) => (c === "\n" ? "⏎" : c === "\t" ? "⇥" : "·"));
}

function hex(raw, dump) {
  if (!dump) return Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join(" ");
  const lines = [];
  for (let i = 0; i < raw.length; i += 16) {
    const chunk = raw.slice(i, i + 16);
    const hx = Array.from(chunk, (b) => b.toString(16).padStart(2, "0")).join(" ").padEnd(47, " ");
    const asc = Array.from(chunk, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${i.toString(16).padStart(8, "0")}  ${hx}  ${asc}`);
  }
  return lines.join("\n");
}

// --- one job ---------------------------------------------------------------------------------

function job(main, args) {
  const id = args.id;
  const fields = h("section", { id: "job-fields" });
  const bodyBox = h("section", { id: "job-body" });
  const actions = h("div", { class: "actions", id: "job-actions" });
  const crumbs = h("p", { class: "crumbs" });
  main.append(crumbs, h("h1", {}, `Job ${id}`), actions, fields, bodyBox);
  let mode = null;
  let shown = null;
  async function refresh(mine) {
    let j;
    try {
      j = await api(`/jobs/${enc(id)}`);
    } catch (e) {
      if (mine !== generation) return;
      fields.replaceChildren(h("p", { class: "muted", id: "job-gone" }, `No job ${id}: ${e.message}`));
      bodyBox.replaceChildren();
      actions.replaceChildren();
      return;
    }
    if (mine !== generation) return;
    crumbs.replaceChildren(h("a", { href: "#/tubes" }, "Tubes"), " / ", h("a", { href: `#/tube/${enc(j.tube)}?state=${j.state}` }, j.tube), " /");
    const rows = [
      ["state", h("span", { class: `badge state-${j.state}` }, j.state)],
      ["priority", `${j.pri}${j.urgent ? " (urgent)" : ""}`],
      ["age", duration(j.age)],
      ["delay", duration(j.delay)],
      ["TTR", duration(j.ttr)],
      ["time left", j.state === "reserved" || j.state === "delayed" ? duration(j["time-left"]) : "–"],
      ["reserves", num(j.reserves)], ["releases", num(j.releases)], ["timeouts", num(j.timeouts)],
      ["buries", num(j.buries)], ["kicks", num(j.kicks)], ["size", bytes(j.size)], ["binlog file", j.file || "–"],
    ];
    fields.replaceChildren(h("dl", { class: "fields" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k }, v)])));
    if (session.actions) actions.replaceChildren(...jobButtons(j, true));
    const key = `${j.body}|${j.body_base64}`;
    if (shown === key) return; // keep the reader's place and choice
    shown = key;
    if (j.body === undefined && j.body_base64 === undefined) {
      bodyBox.replaceChildren(h("h2", {}, "Body"), h("p", { class: "muted" }, "Job bodies are hidden: start beanq with --http-token-file, or --http-show-bodies."));
      return;
    }
    const raw = j.body !== undefined ? new TextEncoder().encode(j.body) : b64bytes(j.body_base64);
    let pretty = null;
    if (j.body !== undefined) {
      try { pretty = JSON.stringify(JSON.parse(j.body), null, 2); } catch (e) { pretty = null; }
    }
    if (mode === null) mode = pretty !== null ? "json" : j.body !== undefined ? "text" : "hex";
    const pre = h("pre", { class: "body", id: "body-view" });
    const render = () => {
      pre.textContent = mode === "json" ? pretty : mode === "hex" ? hex(raw, true) : j.body !== undefined ? j.body : printable(raw);
      for (const b of switcher.querySelectorAll("button")) b.classList.toggle("active", b.dataset.mode === mode);
    };
    const switcher = h("div", { class: "tabs" }, ...[["text", "Text"], ["json", "JSON"], ["hex", "Hex"]].map(([m, label]) =>
      h("button", { type: "button", class: "tab", "data-mode": m, disabled: m === "json" && pretty === null, onclick: () => { mode = m; render(); } }, label)));
    bodyBox.replaceChildren(h("h2", {}, "Body"), switcher, pre);
    render();
  }
  return refresh;
}

// --- schedules -------------------------------------------------------------------------------

const SCHEDULE_COLUMNS = [
  ["name", "Schedule", "name"],
  ["tube", "Tube", "tube"],
  ["trigger", "Trigger", null],
  ["next_fire", "Next fire", "next"],
  ["last_fire", "Last fire", "last"],
  ["fired", "Fired", "fired"],
  ["skipped", "Skipped", "skipped"],
  ["missed", "Missed", "missed"],
  ["paused", "State", "paused"],
];

// A Unix time in the browser's local time: the time of day if it is today, else the date too
// (the title has it in UTC).
function localTime(ts) {
  const d = new Date(ts * 1000);
  const p = (n) => String(n).padStart(2, "0");
  const time = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${time}`;
}

function seconds(x) {
  return x < 60 && x !== Math.floor(x) ? `${+x.toFixed(3)}s` : duration(x);
}

// A fire time, absolute and relative (on the server's clock: `delta` is from the API).
function fireCell(col, ts, delta, future, emptyText) {
  if (ts === null) return h("td", { "data-col": col, "data-value": "", class: "when" }, h("span", { class: "muted" }, emptyText));
  const span = delta < 1 ? "<1s" : duration(delta);
  const rel = future ? `in ${span}` : `${span} ago`;
  return h("td", { "data-col": col, "data-value": ts, class: "when", title: new Date(ts * 1000).toISOString() },
    h("span", { class: "abs" }, localTime(ts)), " ", h("span", { class: "rel" }, rel));
}

function triggerCell(sc) {
  if (sc.every !== undefined) {
    return h("td", { "data-col": "trigger", "data-value": `every ${sc.every}`, title: `from ${new Date(sc.start * 1000).toISOString()}` },
      `every ${seconds(sc.every)}`);
  }
  return h("td", { "data-col": "trigger", "data-value": `cron ${sc.cron} ${sc.tz}` }, h("code", {}, sc.cron), " ", h("span", { class: "muted" }, sc.tz));
}

function scheduleButtons(sc) {
  const base = `/schedules/${enc(sc.name)}`;
  return [
    sc.paused
      ? h("button", { type: "button", class: "small", "data-action": "resume-schedule", onclick: () => act(`${base}/resume`, {}, () => `Resumed ${sc.name}`) }, "Resume")
      : h("button", { type: "button", class: "small", "data-action": "pause-schedule", onclick: () => act(`${base}/pause`, {}, () => `Paused ${sc.name}`) }, "Pause"),
    confirmButton("Delete", "Sure?", () => act(`${base}/delete`, {}, () => `Deleted schedule ${sc.name}`), { class: "danger small", "data-action": "delete-schedule" }),
  ];
}

function schedules(main, args, params) {
  const state = { q: params.get("q") || "", sort: params.get("sort") || "name", order: params.get("order") || "asc", offset: 0 };
  const filter = h("input", { type: "search", id: "schedule-filter", placeholder: "Filter by schedule or tube", value: state.q });
  const summary = h("span", { class: "muted", id: "schedules-summary" });
  const holder = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  main.append(h("h1", {}, "Schedules"), h("div", { class: "toolbar" }, filter, summary), holder, pager);
  let typing = null;
  filter.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = filter.value; state.offset = 0; redraw(); }, 200);
  });
  const setSort = (key) => {
    if (state.sort === key) state.order = state.order === "asc" ? "desc" : "asc";
    else {
      state.sort = key;
      state.order = key === "name" || key === "tube" || key === "next" ? "asc" : "desc";
    }
    state.offset = 0;
    redraw();
  };
  async function refresh(mine) {
    const query = new URLSearchParams({ q: state.q, sort: state.sort, order: state.order, offset: state.offset, limit: SCHEDULES_PAGE });
    const data = await api(`/schedules?${query}`);
    if (mine !== generation) return;
    if (!data.total) {
      holder.replaceChildren(h("p", { class: "muted empty", id: "no-schedules" },
        "No schedules. Declare one with ", h("code", {}, "beanq-schedule-add"), ", ", h("code", {}, "beanqctl schedule add"), " or a worker's ", h("code", {}, "@periodic"), "."));
      summary.textContent = "";
      pager.replaceChildren();
      return;
    }
    const columns = session.actions ? [...SCHEDULE_COLUMNS, ["", "", null]] : SCHEDULE_COLUMNS;
    const head = columns.map(([field, label, key]) => key === null
      ? h("th", {}, label)
      : h("th", {
        class: `sortable${state.sort === key ? " sorted" : ""}${["fired", "skipped", "missed"].includes(field) ? " num" : ""}`,
        "data-sort": key, tabindex: 0, "aria-sort": state.sort === key ? (state.order === "asc" ? "ascending" : "descending") : null,
        onclick: () => setSort(key), onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); setSort(key); } },
      }, label, state.sort === key ? (state.order === "asc" ? " ▲" : " ▼") : ""));
    const rows = data.schedules.map((sc) => {
      const about = `jobs: pri ${sc.pri}, ttr ${duration(sc.ttr)}${sc.delay ? `, delay ${duration(sc.delay)}` : ""}, ${bytes(sc.size)}\n` +
        `overlap ${sc.overlap}, catchup ${sc.catchup}, grace ${seconds(sc.grace)}${sc.late_max ? `\nlate at most ${sc.late_max}s` : ""}`;
      const row = h("tr", { "data-schedule": sc.name, class: sc.paused ? "paused" : null },
        h("td", { "data-col": "name", "data-value": sc.name, title: about }, h("strong", {}, sc.name)),
        h("td", { "data-col": "tube", "data-value": sc.tube }, h("a", { href: `#/tube/${enc(sc.tube)}` }, sc.tube)),
        triggerCell(sc),
        fireCell("next_fire", sc.next_fire, sc.next_fire_in, true, "paused"),
        fireCell("last_fire", sc.last_fire, sc.last_fire_ago, false, "never"),
        cell("fired", sc.fired, undefined, "num"),
        cell("skipped", sc.skipped, undefined, "num"),
        cell("missed", sc.missed, undefined, sc.missed ? "num warn" : "num"),
        h("td", { "data-col": "paused", "data-value": String(sc.paused) },
          sc.paused ? h("span", { class: "badge warn" }, "paused") : h("span", { class: "badge ok" }, "active")),
      );
      if (session.actions) row.append(h("td", { class: "row-actions" }, scheduleButtons(sc)));
      return row;
    });
    holder.replaceChildren(table(head, rows, { class: "data", id: "schedules-table" }));
    const end = Math.min(data.offset + data.schedules.length, data.matched);
    summary.textContent = data.matched
      ? `${num(data.offset + 1)}–${num(end)} of ${num(data.matched)}${data.matched !== data.total ? ` matching (${num(data.total)} schedules)` : " schedules"}`
      : `no schedule matches (${num(data.total)} schedules)`;
    pager.replaceChildren(
      h("button", { type: "button", id: "schedules-prev", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - SCHEDULES_PAGE); redraw(); } }, "‹ Previous"),
      h("button", { type: "button", id: "schedules-next", disabled: end >= data.matched, onclick: () => { state.offset += SCHEDULES_PAGE; redraw(); } }, "Next ›"),
    );
  }
  return refresh;
}

// --- connections -----------------------------------------------------------------------------

function connections(main, args, params) {
  let offset = 0;
  const holder = h("div", { class: "table-wrap" });
  const summary = h("span", { class: "muted", id: "conns-summary" });
  const pager = h("div", { class: "pager" });
  main.append(h("h1", {}, "Connections"), h("div", { class: "toolbar" }, summary), holder, pager);
  async function refresh(mine) {
    const data = await api(`/connections?offset=${offset}&limit=${CONNS_PAGE}`);
    if (mine !== generation) return;
    const rows = data.connections.map((c) => h("tr", { "data-conn": c.id },
      cell("id", c.id, String(c.id)),
      h("td", { "data-col": "address" }, c.address || "–"),
      h("td", { "data-col": "role" }, [c.producer ? h("span", { class: "badge" }, "producer") : null, c.worker ? h("span", { class: "badge" }, "worker") : null]),
      h("td", { "data-col": "use" }, h("a", { href: `#/tube/${enc(c.use)}` }, c.use)),
      h("td", { "data-col": "watch" }, c.watch.map((w, i) => [i ? ", " : "", h("a", { href: `#/tube/${enc(w)}` }, w)])),
      h("td", { "data-col": "reserved", "data-value": c.reserved.length, class: "num" },
        c.reserved.length ? [`${c.reserved.length}: `, c.reserved.slice(0, 5).map((id, i) => [i ? ", " : "", h("a", { href: `#/job/${id}` }, id)]), c.reserved.length > 5 ? " …" : ""] : "0"),
      h("td", { "data-col": "waiting", "data-value": String(c.waiting) }, c.waiting ? h("span", { class: "badge ok" }, "waiting") : ""),
      cell("idle", c.idle, duration(c.idle), "num"),
    ));
    holder.replaceChildren(table(["Id", "Address", "Role", "Uses", "Watches", "Jobs held", "Reserve", "Idle"].map((c, i) => h("th", { class: i === 5 || i === 7 ? "num" : "" }, c)), rows, { class: "data", id: "conns-table" }));
    const end = Math.min(offset + data.connections.length, data.total);
    summary.textContent = data.total ? `${num(offset + 1)}–${num(end)} of ${num(data.total)} connections` : "No connections.";
    pager.replaceChildren(
      h("button", { type: "button", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - CONNS_PAGE); redraw(); } }, "‹ Previous"),
      h("button", { type: "button", disabled: end >= data.total, onclick: () => { offset += CONNS_PAGE; redraw(); } }, "Next ›"),
    );
  }
  return refresh;
}

// --- start -----------------------------------------------------------------------------------

async function start() {
  try {
    session = await api("/session");
  } catch (e) {
    if (!(e instanceof ApiError && e.message === "not logged in")) flash(`Cannot reach the server: ${e.message}`, "error");
    return;
  }
  document.body.dataset.actions = session.actions ? "on" : "off";
  const logout = document.getElementById("logout");
  if (session.via === "cookie") {
    logout.hidden = false;
    logout.addEventListener("click", async () => {
      await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": session.csrf || "" } });
      location.assign("/login");
    });
  }
  if (!session.actions) {
    document.getElementById("server").after(h("span", { class: "badge", id: "read-only", title: "start beanq with --http-token-file to allow actions" }, "read-only"));
  }
  window.addEventListener("hashchange", show);
  show();
  const top = () => api("/stats").then(header, () => {});
  top();
  setInterval(top, 10000);
}

document.addEventListener("DOMContentLoaded", start);
