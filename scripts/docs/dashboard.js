// The live sale dashboard: polls GET /admin/stats every second (and /metrics for Redis conflicts), keeps the last
// five minutes in memory, and draws per item the numbers and three charts (Chart.js, Debian's libjs-chart.js).
//
// The admin token is asked once and kept in sessionStorage (this tab only). A link may carry it in the fragment,
// which never reaches a server: /dashboard#token=T&item=ID — the page stores the token, removes it from the address
// bar, and shows only item ID (without item=, the 20 most recently set up items).
"use strict";

const WINDOW_S = 300;       // charts show the last five minutes
const RATE_S = 5;           // rates and percentiles over the last five seconds
const KEY = "seckilld.admin_token";
const REFUSALS = ["sold_out", "limit_exceeded", "busy", "not_started", "ended", "bad_token", "unavailable",
                  "in_progress", "idempotency_mismatch", "bad_request", "unknown_item", "other"];

// a waiting-room item's room (v1.2): shown only for the items that have one
const ROOM = [["waiting", "waiting"], ["admitted", "admitted"], ["admit_per_s", "admit/s"]];

const params = new URLSearchParams(location.hash.slice(1));
if (params.get("token")) {
  sessionStorage.setItem(KEY, params.get("token"));
  params.delete("token");
  history.replaceState(null, "", location.pathname + location.search + (params.toString() ? "#" + params : ""));
}
const onlyItem = params.get("item");
const history_ = [];        // [{t, stats, conflicts}] newest last, at most WINDOW_S + RATE_S entries
const views = new Map();    // item_id -> {el, charts}

function token() { return sessionStorage.getItem(KEY); }

function askToken(message) {
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  const t = document.getElementById("token").value.trim();
  if (!t) return;
  sessionStorage.setItem(KEY, t);
  document.getElementById("login").hidden = true;
  poll();
});

function fmt(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return digits === undefined ? String(n) : n.toFixed(digits);
}

// the quantile q of the answers between two cumulative histograms (linear within a bucket), in ms
function quantile(bounds, now, then, q) {
  const counts = now.map((c, i) => c - (then ? then[i] : 0));
  const total = counts[counts.length - 1];
  if (total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] >= rank) {
      const lo = i === 0 ? 0 : bounds[i - 1], hi = bounds[i] === null ? bounds[i - 1] : bounds[i];
      const below = i === 0 ? 0 : counts[i - 1], inBucket = counts[i] - below;
      return inBucket > 0 ? lo + (hi - lo) * (rank - below) / inBucket : hi;
    }
  }
  return bounds[bounds.length - 2];
}

function itemAt(entry, id) {
  return entry && entry.stats.items.find((it) => it.item_id === id);
}

function refused(answers) {
  return REFUSALS.reduce((s, r) => s + (answers[r] || 0), 0);
}

function chart(canvas, datasets, yTitle) {
  return new Chart(canvas, {
    type: "line",
    data: { labels: [], datasets: datasets.map(([label, color]) => ({ label, borderColor: color, backgroundColor: color,
      data: [], pointRadius: 0, borderWidth: 2, tension: 0.2 })) },
    options: { animation: false, responsive: true, maintainAspectRatio: false, interaction: { intersect: false },
      scales: { x: { ticks: { maxTicksLimit: 6 } }, y: { beginAtZero: true, title: { display: true, text: yTitle } } },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } } },
  });
}

function view(id) {
  if (views.has(id)) return views.get(id);
  const el = document.createElement("section");
  el.className = "item";
  el.dataset.item = id;
  const num = (field, label) => `<div><label>${label}</label><span class="num" data-field="${field}">–</span></div>`;
  el.innerHTML = `<h2>${id.replace(/[<>&"]/g, "")}</h2><div class="numbers">` +
    num("stock_left", "stock left") + num("sold", "sold") + num("orders_persisted", "persisted") +
    num("queued_units", "queued") + num("drift", "drift") + num("accepted_per_s", "accepted/s") +
    num("refused_per_s", "refused/s") + num("p50_ms", "p50 ms") + num("p99_ms", "p99 ms") +
    num("paid_orders", "paid orders") + num("cancelled_orders", "cancelled") + num("expired_orders", "expired") +
    num("refunds_due", "refunds due") +
    ROOM.map(([f, label]) => num(f, label).replace("<div>", '<div class="room" hidden>')).join("") +
    `</div><div class="refusals">refusals (this process): ` +
    REFUSALS.map((r) => `${r} <span class="num" data-field="refused_${r}">0</span>`).join(" · ") +
    `</div><div class="charts"><div><canvas data-chart="rates"></canvas></div>` +
    `<div><canvas data-chart="latency"></canvas></div><div><canvas data-chart="stock"></canvas></div></div>`;
  document.getElementById("items").appendChild(el);
  const v = {
    el,
    rates: chart(el.querySelector('[data-chart="rates"]'), [["accepted/s", "#1a7f37"], ["refused/s", "#b3261e"]], "per second"),
    latency: chart(el.querySelector('[data-chart="latency"]'), [["p50", "#0969da"], ["p99", "#8250df"]], "ms"),
    stock: chart(el.querySelector('[data-chart="stock"]'), [["stock left", "#bf8700"], ["sold", "#1a7f37"], ["persisted", "#57606a"]], "units"),
  };
  views.set(id, v);
  return v;
}

function set(el, field, value) {
  const span = el.querySelector(`[data-field="${field}"]`);
  if (span) span.textContent = value;
}

function push(c, label, values) {
  c.data.labels.push(label);
  c.data.datasets.forEach((d, i) => d.data.push(values[i]));
  while (c.data.labels.length > WINDOW_S) {
    c.data.labels.shift();
    c.data.datasets.forEach((d) => d.data.shift());
  }
  c.update("none");
}

function render() {
  const cur = history_[history_.length - 1];
  const back = history_[Math.max(0, history_.length - 1 - RATE_S)];
  const dt = back && back !== cur ? (cur.t - back.t) / 1000 : 0;
  const c = cur.stats.consumer;
  document.getElementById("consumer-state").textContent = c ? c.state : "not in this process";
  document.getElementById("consumer-lag").textContent = c && c.lag !== undefined ? c.lag : "–";
  document.getElementById("conflicts-rate").textContent =
    dt && cur.conflicts !== null && back.conflicts !== null ? fmt((cur.conflicts - back.conflicts) / dt, 1) : "–";
  const label = new Date(cur.t).toLocaleTimeString();
  for (const it of cur.stats.items) {
    const v = view(it.item_id);
    const old = dt ? itemAt(back, it.item_id) : null;
    const accepted = old ? (it.sold - old.sold) / dt : null;     // units, every process (Redis's books)
    const refusedRate = old ? (refused(it.answers) - refused(old.answers)) / dt : null;
    const p50 = quantile(it.latency_ms.bounds, it.latency_ms.counts, old && old.latency_ms.counts, 0.5);
    const p99 = quantile(it.latency_ms.bounds, it.latency_ms.counts, old && old.latency_ms.counts, 0.99);
    for (const f of ["stock_left", "sold", "orders_persisted", "queued_units", "drift"]) set(v.el, f, it[f]);
    // the order's life (v1.2), counted in MySQL since the item's set-up: every process's, not only this one's
    for (const f of ["paid_orders", "cancelled_orders", "expired_orders", "refunds_due"]) set(v.el, f, it[f]);
    // the waiting room (v1.2), every process's: how many wait, how many were let in, and the pace
    const room = it.admit_per_s !== undefined;
    v.el.querySelectorAll(".room").forEach((d) => { d.hidden = !room; });
    if (room) for (const [f] of ROOM) set(v.el, f, it[f]);
    set(v.el, "accepted_per_s", fmt(accepted, 1));
    set(v.el, "refused_per_s", fmt(refusedRate, 1));
    set(v.el, "p50_ms", fmt(p50, 1));
    set(v.el, "p99_ms", fmt(p99, 1));
    for (const r of REFUSALS) set(v.el, "refused_" + r, it.answers[r] || 0);
    v.el.dataset.rendered = String(cur.t);
    push(v.rates, label, [accepted, refusedRate]);
    push(v.latency, label, [p50, p99]);
    push(v.stock, label, [it.stock_left, it.sold, it.orders_persisted]);
  }
  document.body.dataset.updated = String(cur.t);
}

async function conflicts() {
  try {
    const text = await (await fetch("/metrics")).text();
    const m = text.match(/^seckilld_redis_tx_conflicts_total(?:\{[^}]*\})? ([0-9.e+]+)$/m);
    return m ? Number(m[1]) : null;
  } catch (e) {
    return null;
  }
}

async function poll() {
  const t = token();
  if (!t) return askToken();
  const status = document.getElementById("status");
  try {
    const url = "/admin/stats" + (onlyItem ? "?item_id=" + encodeURIComponent(onlyItem) : "");
    const [r, conf] = await Promise.all([fetch(url, { headers: { Authorization: "Bearer " + t } }), conflicts()]);
    if (r.status === 401) {
      sessionStorage.removeItem(KEY);
      return askToken("That token was refused.");
    }
    const stats = await r.json();
    if (!r.ok) throw new Error(stats.message || r.status);
    history_.push({ t: stats.now, stats, conflicts: conf });
    while (history_.length > WINDOW_S + RATE_S) history_.shift();
    render();
    status.textContent = "updated " + new Date(stats.now).toLocaleTimeString();
    status.classList.remove("bad");
  } catch (e) {
    status.textContent = "error: " + e.message;
    status.classList.add("bad");
  }
  setTimeout(poll, 1000);
}

poll();
