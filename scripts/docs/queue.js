// The page a person waits on: GET /queue/{item_id} (API-v1.2.md "Waiting room"). docs/init.lua inlines this file
// into docs/queue.html, so the page is the one answer of one route and needs nothing else.
//
// A person joins with a user id (typed, or from the fragment, which never reaches a server: /queue/ITEM#user=ID),
// then the page polls GET /queue/status as each answer's retry_after_ms says, always with the newest ticket: an
// answer may carry a replacement "ticket" (after the draw at starts_at a pre-start ticket is swapped for one that
// carries the drawn place). The ticket, the position at join and, later, the pass and the order are kept in
// sessionStorage (this tab only), so a reload keeps the place. Once admitted, Buy posts /seckill/add with the pass's
// token and an Idempotency-Key, so that a retry after a lost answer never buys twice.
// What the server says is only ever set as textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const ITEM = (() => {
  try {
    return decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop());
  } catch (e) {
    return "";
  }
})();
const KEY = "seckilld.queue." + ITEM;
const MIN_POLL_MS = 250;     // whatever retry_after_ms says, never a tighter loop than this
const MAX_POLL_MS = 30000;
const RECHECK_MS = 5000;     // while admitted: has the item sold out meanwhile
const SOLD_OUT_MS = 10000;   // sold out with a place: units may come back (an order cancelled or expired unpaid)
const ORDER_POLLS = 30;      // a queued order is looked at again every 2 s until MySQL has it, at most this often

// the closing states, and what each says
const FINAL = {
  sold_out: "Sold out: every unit has been sold.",
  expired: "Your pass expired before you bought. The queue has moved on.",
  ended: "The sale has ended.",
  limit_exceeded: "You already bought this item.",
};
// what an error code means to a person
const ERRORS = {
  unknown_item: "There is no such item.",
  no_waiting_room: "This item has no waiting room: it is sold without a queue.",
  not_started: "The sale has not started yet.",
  bad_request: "That was refused.",
  bad_ticket: "Your ticket was refused (it is not this item's or this user's, or the sale was set up again).",
  bad_token: "Your pass was refused.",
  busy: "The server is busy.",
  unavailable: "The server is unavailable for a moment.",
  overloaded: "The server is overloaded.",
  in_progress: "Your purchase is still being decided.",
};

let st = load();   // {user, ticket, first, position, wait_s, starts_at, token, expires_at, idem, order:{id,status},
                   //  final}
let timer = null;  // the next poll
let failures = 0;  // passing failures in a row (backoff)
let buying = false; // a buy is in flight: the button stays disabled and the queue is not asked meanwhile
let skew = 0;      // the server's clock minus this one, ms (GET /time), for the pass's countdown

function load() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY));
    return s && typeof s === "object" ? s : {};
  } catch (e) {
    return {};
  }
}

function save() {
  try {
    sessionStorage.setItem(KEY, JSON.stringify(st));
  } catch (e) {
    // storage refused (private mode, quota): the place holds until the tab is closed or reloaded
  }
}

function say(text, bad) {
  const m = $("message");
  m.textContent = text || "";
  m.classList.toggle("bad", !!bad);
}

// a refusal as a person reads it: what the code means, and the server's own words
function explain(r) {
  if (r.status === 0) return "No connection to the server.";
  const code = typeof r.data.error === "string" ? r.data.error : "";
  const msg = typeof r.data.message === "string" ? r.data.message : "";
  const meaning = ERRORS[code] || FINAL[code] || (code ? "Error " + code + "." : "HTTP " + r.status + ".");
  return msg ? meaning + " (" + msg + ")" : meaning;
}

async function api(method, path, body, headers) {
  const h = Object.assign(body ? { "Content-Type": "application/json" } : {}, headers || {});
  try {
    const r = await fetch(path, { method, headers: h, body: body ? JSON.stringify(body) : undefined,
                                  cache: "no-store" });
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      // not JSON: an error page of something in between
    }
    return { status: r.status, data: data && typeof data === "object" ? data : {},
             retryAfter: Number(r.headers.get("Retry-After")) || 0 };
  } catch (e) {
    return { status: 0, data: {}, retryAfter: 0 };
  }
}

function later(fn, ms) {
  clearTimeout(timer);
  const wait = Number.isFinite(ms) ? Math.min(Math.max(ms, MIN_POLL_MS), MAX_POLL_MS) : 1000;
  timer = setTimeout(fn, wait);
}

function newKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function waitText(s) {
  if (typeof s !== "number" || !Number.isFinite(s)) return "–";
  if (s < 1) return "< 1 s";
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function stateName() {
  if (st.final) return st.final;
  if (st.order) return "bought";
  if (st.token) return "admitted";
  if (st.ticket) return "waiting";
  return "join";
}

function render() {
  const state = ITEM ? stateName() : "error";
  document.body.dataset.state = state;
  $("join-form").hidden = state !== "join";
  $("waiting").hidden = state !== "waiting";
  $("admitted").hidden = state !== "admitted";
  $("bought").hidden = state !== "bought";
  $("over").hidden = !st.final;
  $("who").textContent = st.user || "–";
  $("leave").hidden = state === "join";
  if (state === "waiting") {
    $("position").textContent = String(st.position);
    $("wait").textContent = waitText(st.wait_s);
    // the position falls from the position at join (1 is next): the bar fills as it does
    $("progress").value = st.first > 0 ? (st.first - st.position) / st.first : 0;
    startsIn();
  } else if (state === "admitted") {
    $("buy").disabled = buying;
    passLeft();
  } else if (state === "bought") {
    $("order-id").textContent = st.order.id;
    $("order-status").textContent = st.order.status;
  }
  if (st.final) {
    $("over-text").textContent = FINAL[st.final] + (st.final === "sold_out" && st.ticket
      ? " This page keeps your place and checks now and then: units come back when an order is cancelled or "
        + "expires unpaid." : "");
  }
}

function finish(state) {
  clearTimeout(timer);
  st.final = state;
  save();
  render();
  if (state === "sold_out" && st.ticket) later(poll, SOLD_OUT_MS);
}

// an answer of POST /queue/join or GET /queue/status (200)
function accept(d) {
  if (typeof d.ticket === "string" && d.ticket) st.ticket = d.ticket; // always the newest ticket
  if ((d.state === "waiting" || d.state === "admitted") && st.final === "sold_out") st.final = null; // units back
  if (d.state === "waiting" && Number.isInteger(d.position)) {
    st.position = d.position;
    st.wait_s = d.estimated_wait_s;
    st.starts_at = typeof d.starts_at === "number" ? d.starts_at : null; // in the draw: placed at the start
    if (!(st.first >= d.position)) st.first = d.position; // the position at join (or a drawn place further back)
    save();
    render();
    later(poll, d.retry_after_ms);
  } else if (d.state === "admitted" && typeof d.token === "string") {
    if (st.token !== d.token) {
      st.token = d.token;
      st.idem = newKey(); // one Idempotency-Key per pass: its retries are one purchase
    }
    st.expires_at = d.expires_at;
    save();
    render();
    later(poll, Math.min(RECHECK_MS, passMs() + 500));
  } else if (FINAL[d.state]) {
    finish(d.state);
  } else {
    say("The server answered something this page does not know; asking again.", true);
    later(poll, 2000);
  }
}

function dropPlace(text) {
  clearTimeout(timer);
  st = { user: st.user };
  save();
  render();
  say(text + " Join again.", true);
}

// a refusal worth retrying (busy, unavailable, no connection): keep the place, say so, come back later
function retryLater(r, fn) {
  failures += 1;
  say(explain(r) + " Trying again…", true);
  later(fn, r.retryAfter ? r.retryAfter * 1000 : Math.min(1000 * 2 ** (failures - 1), 15000));
}

async function join(e) {
  e.preventDefault();
  const user = $("user").value.trim();
  if (!user) return say("Type your user id first.", true);
  $("join").disabled = true;
  say("Joining…");
  const r = await api("POST", "/queue/join", { item_id: ITEM, user_id: user });
  $("join").disabled = false;
  if (r.status === 200 && r.data.ok === true) {
    st = { user };
    failures = 0;
    say("");
    return accept(r.data);
  }
  if (FINAL[r.data.error]) {
    st = { user };
    return finish(r.data.error);
  }
  say(explain(r), true);
}

async function poll() {
  timer = null;
  if (!st.ticket || st.order || (st.final && st.final !== "sold_out")) return;
  if (buying) return later(poll, 1000);
  const q = new URLSearchParams({ ticket: st.ticket, item_id: ITEM, user_id: st.user });
  const r = await api("GET", "/queue/status?" + q);
  if (r.status === 200 && r.data.ok === true) {
    if (failures > 0) say("");
    failures = 0;
    return accept(r.data);
  }
  if (FINAL[r.data.error]) return finish(r.data.error);
  if (r.status === 400 || r.status === 403 || r.status === 404) return dropPlace(explain(r));
  retryLater(r, poll);
}

async function buy() {
  if (buying || !st.token) return;
  buying = true;
  $("buy").disabled = true;
  say("Buying…");
  const r = await api("POST", "/seckill/add", { item_id: ITEM, user_id: st.user, token: st.token },
                      { "Idempotency-Key": st.idem });
  buying = false;
  if (r.status === 200 && r.data.ok === true && typeof r.data.order_id === "string") {
    clearTimeout(timer);
    st.order = { id: r.data.order_id, status: String(r.data.status) };
    save();
    render();
    say("");
    return follow(0);
  }
  const code = r.data.error;
  // sold out took nothing, and that answer stays with its Idempotency-Key: units that come back need a new one
  if (code === "sold_out") st.idem = newKey();
  if (FINAL[code]) return finish(code);
  if (code === "bad_token") {
    // the pass lapsed or is not valid (yet): the queue says what stands now
    say(explain(r) + " Checking your place…", true);
    st.token = null;
    save();
    render();
    return poll();
  }
  $("buy").disabled = false;
  say(explain(r) + " Press Buy to try again.", true); // busy, unavailable, in_progress, no connection: safe to retry
}

// the order, until MySQL has it (queued -> created)
async function follow(n) {
  const r = await api("GET", "/order/" + encodeURIComponent(st.order.id));
  if (r.status === 200 && r.data.order && typeof r.data.order.status === "string") {
    st.order.status = r.data.order.status;
    save();
    render();
  }
  if (st.order.status === "queued" && n < ORDER_POLLS) setTimeout(() => follow(n + 1), 2000);
}

function passMs() {
  return typeof st.expires_at === "number" ? st.expires_at - (Date.now() + skew) : 0;
}

// the pass's countdown; when it runs out, the queue is asked (it answers expired)
function passLeft() {
  const s = Math.max(0, Math.ceil(passMs() / 1000));
  $("pass-left").textContent = s >= 120 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
}

// before the start: how long until the draw
function startsIn() {
  const ms = typeof st.starts_at === "number" ? st.starts_at - (Date.now() + skew) : 0;
  $("starts").hidden = !(ms > 0);
  if (ms > 0) $("starts-in").textContent = waitText(ms / 1000);
}

async function clock() {
  const t0 = Date.now();
  const r = await api("GET", "/time");
  if (r.status === 200 && typeof r.data.now === "number") skew = r.data.now - (t0 + Date.now()) / 2;
}

function leave() {
  clearTimeout(timer);
  st = { user: st.user };
  save();
  say("");
  render();
}

$("join-form").addEventListener("submit", join);
$("buy").addEventListener("click", buy);
$("leave").addEventListener("click", leave);
setInterval(() => {
  const state = stateName();
  if (state === "admitted") passLeft();
  else if (state === "waiting") startsIn();
}, 1000);

$("item").textContent = ITEM || "–";
if (!ITEM) {
  say("No item in the address: open /queue/ITEM.", true);
} else {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("user");
  if (fromLink && fromLink !== st.user) { // a link for another user: their own place, not this tab's
    st = { user: fromLink };
    save();
  }
  $("user").value = st.user || "";
  render();
  clock();
  if (st.order) {
    if (st.order.status === "queued") follow(0);
  } else if (st.ticket && (!st.final || st.final === "sold_out")) {
    poll(); // a reload: the place is kept, ask where it stands now
  }
}
