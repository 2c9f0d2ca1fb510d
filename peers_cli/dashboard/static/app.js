// The overseer's dashboard: one WebSocket of updates from `peers dashboard`, rendered
// with textContent only (every string a peer wrote goes through clean()). No framework,
// no build step. docs/dashboard.md describes the panels and the updates.

import { clean, inline } from "./text.js";

const $ = (id) => document.getElementById(id);
const CSRF = document.querySelector('meta[name="peers-csrf"]').content;
const SILENCE = 45000; // ms without a frame (the server pings every 20 s): reconnect
const PINS_KEY = "peers-dashboard-pins";
const KEEP = 2000; // messages kept on the page, as the dashboard keeps (link.KEEP): oldest go

const state = {
  up: false,
  me: null,
  daemon: {},
  peers: [],
  files: [],
  audit: [],
  messages: new Map(),
  panels: {},
  features: {},
  filter: "",
  thread: null,
  replyTo: null,
  pins: new Set(JSON.parse(localStorage.getItem(PINS_KEY) || "[]")),
  toAck: new Set(),
  clockSkew: 0,
};

// ------------------------------------------------------------------ small helpers

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function peerText(text) {
  return el("span", "peer-text", clean(text));
}

function now() {
  return Date.now() / 1000 + state.clockSkew;
}

function ago(ts) {
  if (!ts) return "-";
  const s = Math.max(0, now() - ts);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)}h ago`;
  return `${(s / 86400).toFixed(1)}d ago`;
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function basename(path) {
  if (!path) return "";
  const parts = path.split("/").filter(Boolean);
  return parts.length ? parts[parts.length - 1] : path;
}

const REACH = {
  push: "push",
  next_tool_call: "next tool call",
  idle_wake: "idle wake armed",
  codex_queue: "codex queue wake",
  inbox: "inbox wake",
  next_prompt: "next prompt",
  when_checked: "only when it checks",
  gone: "gone",
};

async function post(action, body) {
  const res = await fetch(`/api/${action}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-peers-csrf": CSRF },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await res.json().catch(() => ({ message: res.statusText }));
  if (!res.ok) throw new Error(data.message || `HTTP ${res.status}`);
  return data;
}

function banner(text, kind) {
  const b = $("banner");
  b.hidden = !text;
  b.textContent = text || "";
  b.className = `banner ${kind || ""}`;
}

function setConn(text, cls) {
  const c = $("conn");
  c.textContent = text;
  c.className = `conn ${cls}`;
}

// ------------------------------------------------------------------ peers

function peerById(id) {
  return state.peers.find((p) => p.id === id);
}

function canKill(peer) {
  // Where `peers kill` would be allowed: a live session on the daemon's own machine,
  // over the local socket, never yourself. The daemon still decides (and says why not).
  return (
    peer.state === "active" &&
    !state.daemon.remote &&
    peer.machine_id === state.daemon.machine_id &&
    (!state.me || peer.id !== state.me.id)
  );
}

function renderPeer(peer) {
  const li = el("li", `peer ${peer.state} ${peer.status || ""}`);
  li.dataset.peer = peer.id;
  const head = el("div", "peer-head");
  head.append(el("strong", "name", inline(peer.name)));
  head.append(el("span", "client", clean(peer.client)));
  const status = peer.state === "gone" ? "gone" : peer.status || "active";
  head.append(el("span", `badge ${status}`, status));
  if (peer.pending) head.append(el("span", "badge pending", `${peer.pending} waiting`));
  if (state.me && peer.id === state.me.id) head.append(el("span", "badge you", "you"));
  li.append(head);

  const facts = el("dl", "facts");
  const fact = (k, v) => {
    if (v === null || v === undefined || v === "") return;
    facts.append(el("dt", "", k));
    facts.append(el("dd", "", v));
  };
  fact("receives", peer.reach ? REACH[peer.reach] || clean(peer.reach) : clean(peer.receive));
  fact("summary", clean(peer.summary));
  fact("note", clean(peer.note));
  const where = peer.git_root ? basename(peer.git_root) : peer.cwd;
  fact("repo", where ? inline(where) + (peer.branch ? ` @ ${inline(peer.branch)}` : "") : "");
  if (peer.files) {
    const recent = (peer.recent_files || []).map(inline).join(", ");
    fact("files", `${peer.files} active${recent ? ": " + recent : ""}`);
  }
  fact("host", peer.host && peer.host !== state.daemon.host ? inline(peer.host) : "");
  fact("last seen", ago(peer.last_seen));
  if (peer.state === "gone") fact("left", clean(peer.gone_reason || ""));
  li.append(facts);

  if (peer.state === "active") {
    const actions = el("div", "actions");
    const write = el("button", "", "Write");
    write.type = "button";
    write.addEventListener("click", () => {
      $("to").value = `peer:${peer.id}`;
      $("text").focus();
    });
    const rename = el("button", "", "Rename");
    rename.type = "button";
    rename.addEventListener("click", () => renamePeer(peer));
    actions.append(write, rename);
    if (canKill(peer)) {
      const kill = el("button", "danger", "Kill");
      kill.type = "button";
      kill.addEventListener("click", () => killPeer(peer));
      actions.append(kill);
    }
    li.append(actions);
  }
  return li;
}

function renderPeers() {
  const live = state.peers.filter((p) => p.state === "active");
  const gone = state.peers.filter((p) => p.state !== "active").slice(0, 30);
  $("peers").replaceChildren(...live.map(renderPeer));
  $("gone").replaceChildren(...gone.map(renderPeer));
  $("peer-count").textContent = `${live.length}`;
  $("gone-count").textContent = `${gone.length}`;
  renderTargets();
}

function renderTargets() {
  const select = $("to");
  const keep = select.value;
  const options = [];
  for (const p of state.peers) {
    if (p.state !== "active" || (state.me && p.id === state.me.id)) continue;
    const o = el("option", "", `${inline(p.name)} (${clean(p.client)})`);
    o.value = `peer:${p.id}`;
    options.push(o);
  }
  for (const [scope, label] of [
    ["machine", "everyone on this machine"],
    ["repo", "everyone in my repository"],
    ["directory", "everyone in my directory"],
  ]) {
    const o = el("option", "scope", label);
    o.value = `scope:${scope}`;
    options.push(o);
  }
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

async function confirmDialog(text, { input = null, force = false } = {}) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  const field = $("confirm-input");
  field.hidden = input === null;
  field.value = input || "";
  $("confirm-force-label").hidden = !force;
  $("confirm-force").checked = false;
  dialog.returnValue = "";
  dialog.showModal();
  if (input !== null) field.select();
  await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
  if (dialog.returnValue !== "ok") return null;
  return { value: field.value, force: $("confirm-force").checked };
}

async function renamePeer(peer) {
  const answer = await confirmDialog(`New name for ${inline(peer.name)}:`, { input: peer.name });
  if (!answer || !answer.value.trim() || answer.value === peer.name) return;
  try {
    await post("rename", { target: peer.id, name: answer.value.trim() });
  } catch (e) {
    banner(`Rename refused: ${e.message}`, "error");
  }
}

async function killPeer(peer) {
  const answer = await confirmDialog(
    `Kill ${inline(peer.name)} (${clean(peer.client)}, pid ${peer.agent_pid})? ` +
      "Its agent process gets SIGTERM; this is recorded in the audit log.",
    { force: true },
  );
  if (!answer) return;
  try {
    const r = await post("kill", { target: peer.id, force: answer.force });
    banner(clean(r.result.detail), "info");
  } catch (e) {
    banner(`Kill refused: ${e.message}`, "error");
  }
}

// ------------------------------------------------------------------ feed

function matches(msg) {
  if (state.thread && threadRoot(msg) !== state.thread) return false;
  if (!state.filter) return true;
  const hay = `${msg.text}\n${msg.sender_name}\n${msg.recipient_name}\n${msg.id}`.toLowerCase();
  return hay.includes(state.filter);
}

function threadRoot(msg) {
  let cur = msg;
  const seen = new Set();
  while (cur && cur.reply_to && !seen.has(cur.id)) {
    seen.add(cur.id);
    const parent = state.messages.get(cur.reply_to);
    if (!parent) return cur.reply_to;
    cur = parent;
  }
  return cur ? cur.id : msg.id;
}

function renderMessage(msg) {
  const li = el("li", `message ${msg.state}`);
  li.dataset.id = msg.id;
  if (msg.reply_to) li.classList.add("reply");
  if (state.me && msg.recipient === state.me.id) li.classList.add("to-me");
  if (msg.text.startsWith("URGENT: ")) li.classList.add("urgent");
  const head = el("div", "msg-head");
  head.append(el("strong", "from", inline(msg.sender_name)));
  head.append(el("span", "arrow", "→"));
  head.append(el("strong", "to", inline(msg.recipient_name)));
  head.append(el("time", "when", clock(msg.created)));
  const st = el("span", `badge ${msg.state}`, msg.state);
  if (msg.state === "delivered" && msg.delivered_via) st.title = `via ${msg.delivered_via}`;
  head.append(st);
  li.append(head);
  if (msg.reply_to) {
    const parent = state.messages.get(msg.reply_to);
    const ref = el(
      "button",
      "in-reply link",
      parent ? `↪ ${inline(parent.sender_name)}: ${inline(parent.text).slice(0, 80)}` : `↪ ${msg.reply_to}`,
    );
    ref.type = "button";
    ref.addEventListener("click", () => showThread(threadRoot(msg)));
    li.append(ref);
  }
  // Fields a newer daemon may add to a message (typed requests, subjects, reactions):
  // shown when present, as text like the rest.
  if (msg.kind) head.insertBefore(el("span", "badge kind", inline(msg.kind)), st);
  if (msg.subject) li.append(el("div", "subject", inline(msg.subject)));
  li.append(el("div", "text", clean(msg.text)));
  if (Array.isArray(msg.reactions) && msg.reactions.length) {
    const row = el("div", "reactions");
    for (const r of msg.reactions) {
      row.append(el("span", "reaction", `${inline(r.emoji || "")} ${inline(r.name || "")}`));
    }
    li.append(row);
  }
  const tools = el("div", "msg-tools");
  const reply = el("button", "link", "Reply");
  reply.type = "button";
  reply.addEventListener("click", () => startReply(msg));
  const thread = el("button", "link", "Thread");
  thread.type = "button";
  thread.addEventListener("click", () => showThread(threadRoot(msg)));
  const pin = el("button", "link pin", state.pins.has(msg.id) ? "Unpin" : "Pin");
  pin.type = "button";
  pin.addEventListener("click", () => togglePin(msg.id));
  tools.append(reply, thread, pin, el("span", "id", msg.id));
  li.append(tools);
  return li;
}

function sortedMessages() {
  return [...state.messages.values()].sort((a, b) => a.created - b.created);
}

function renderFeed() {
  const feed = $("feed");
  const stick = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 40;
  feed.replaceChildren(...sortedMessages().filter(matches).map(renderMessage));
  renderPins();
  if (stick) feed.scrollTop = feed.scrollHeight;
}

function appendMessage(msg) {
  const feed = $("feed");
  const stick = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 40;
  if (matches(msg)) feed.append(renderMessage(msg));
  if (stick) feed.scrollTop = feed.scrollHeight;
}

function trimMessages() {
  // A page left open for days must not grow without end: forget the oldest (never a
  // pinned one), from the map and from the feed. Search still finds them in the daemon.
  if (state.messages.size <= KEEP) return;
  const excess = [...state.messages.values()]
    .filter((m) => !state.pins.has(m.id))
    .sort((a, b) => a.created - b.created)
    .slice(0, state.messages.size - KEEP);
  for (const m of excess) {
    state.messages.delete(m.id);
    state.toAck.delete(m.id);
    for (const li of $("feed").querySelectorAll(`li.message[data-id="${CSS.escape(m.id)}"]`)) {
      li.remove();
    }
  }
}

function renderPins() {
  const pinned = [...state.pins].map((id) => state.messages.get(id)).filter(Boolean);
  $("pinned").replaceChildren(...pinned.map(renderMessage));
}

function togglePin(id) {
  if (state.pins.has(id)) state.pins.delete(id);
  else state.pins.add(id);
  localStorage.setItem(PINS_KEY, JSON.stringify([...state.pins]));
  renderFeed();
}

function showThread(root) {
  state.thread = state.thread === root ? null : root;
  const chip = $("thread-filter");
  chip.hidden = !state.thread;
  chip.textContent = state.thread ? `thread ${state.thread} ✕` : "";
  renderFeed();
}

function startReply(msg) {
  state.replyTo = msg.id;
  const chip = $("replying");
  chip.hidden = false;
  chip.textContent = `replying to ${inline(msg.sender_name)} (${msg.id}) ✕`;
  if (peerById(msg.sender)) $("to").value = `peer:${msg.sender}`;
  $("text").focus();
}

function stopReply() {
  state.replyTo = null;
  $("replying").hidden = true;
}

function changeMessage(msg) {
  // A message as it is now (state, delivery, recipient, reactions): every copy shown.
  if (!state.messages.has(msg.id)) return;
  state.messages.set(msg.id, msg);
  for (const li of document.querySelectorAll(`li.message[data-id="${CSS.escape(msg.id)}"]`)) {
    li.replaceWith(renderMessage(msg));
  }
}

// ------------------------------------------------------------------ mail to me

function mailForMe(msg) {
  return state.me && msg.recipient === state.me.id && msg.state !== "delivered";
}

function noteMailForMe(msg, fresh) {
  if (!mailForMe(msg)) return;
  state.toAck.add(msg.id);
  if (fresh && document.hidden && "Notification" in window && Notification.permission === "granted") {
    new Notification(`Mail from ${inline(msg.sender_name)}`, {
      body: clean(msg.text).slice(0, 200),
      tag: msg.id,
    });
  }
  flushAcks();
}

async function flushAcks() {
  // Delivered only once the human has been shown it: the page is visible and rendered it.
  if (document.hidden || !state.toAck.size || !state.up) return;
  const ids = [...state.toAck];
  state.toAck.clear();
  try {
    await post("ack", { ids });
  } catch (e) {
    for (const id of ids) state.toAck.add(id);
  }
}

// ------------------------------------------------------------------ files, audit, panels

function renderFiles() {
  const byPath = new Map();
  for (const h of state.files) {
    const key = h.path;
    if (!byPath.has(key)) byPath.set(key, new Set());
    byPath.get(key).add(h.peer_id);
  }
  const rows = state.files.map((h) => {
    const tr = el("tr", h.kind);
    const conflict = byPath.get(h.path).size > 1 || state.files.some(
      (o) => o.peer_id !== h.peer_id && o.kind === "claim" && o.exclusive && overlaps(o.path, h.path),
    );
    if (conflict) tr.classList.add("conflict");
    const shown = h.repo && h.path.startsWith(h.repo + "/") ? h.path.slice(h.repo.length + 1) : h.path;
    const file = el("td", "path");
    file.append(el("span", "", inline(shown)));
    if (conflict) file.append(el("span", "badge conflict", "conflict"));
    tr.append(file);
    tr.append(el("td", "", inline(h.name)));
    const what = h.kind === "claim" ? (h.exclusive ? "exclusive claim" : "claim") : "editing";
    const whatCell = el("td", "", what);
    if (h.reason) whatCell.append(el("div", "reason", clean(h.reason)));
    tr.append(whatCell);
    tr.append(el("td", "", clock(h.until)));
    const act = el("td", "");
    if (h.kind === "claim") {
      const b = el("button", "", "Release");
      b.type = "button";
      b.addEventListener("click", async () => {
        const ok = await confirmDialog(`Release ${inline(h.name)}'s claim on ${inline(shown)}?`);
        if (!ok) return;
        try {
          await post("release", { target: h.peer_id, patterns: [h.path] });
        } catch (e) {
          banner(`Release refused: ${e.message}`, "error");
        }
      });
      act.append(b);
    }
    tr.append(act);
    return tr;
  });
  $("files").replaceChildren(...rows);
  $("files-empty").hidden = rows.length > 0;
}

function overlaps(pattern, path) {
  if (pattern === path) return true;
  const prefix = pattern.replace(/\*\*.*$/, "").replace(/\*.*$/, "");
  return prefix !== pattern && path.startsWith(prefix);
}

function renderAudit() {
  const items = state.audit.map((r) => {
    const li = el("li", `audit-item ${r.action}`);
    li.append(el("time", "when", `${clock(r.at)} `));
    li.append(el("strong", "", `${clean(r.action)} `));
    li.append(el("span", "", `${inline(r.target_name || r.target || "")} `));
    li.append(el("span", "detail", clean(r.detail)));
    li.append(el("div", "actor", `by ${inline(r.actor)}`));
    return li;
  });
  $("audit").replaceChildren(...items);
  $("audit-empty").hidden = items.length > 0;
}

function cellText(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value) && value.every((b) => b && typeof b === "object" && "voter_name" in b)) {
    // a proposal's ballots: who voted what (or has yet to)
    return inline(value.map((b) => `${b.voter_name}: ${b.vote || "—"}`).join(", ")).slice(0, 300);
  }
  if (typeof value === "object") return inline(JSON.stringify(value)).slice(0, 300);
  if (typeof value === "number" && value > 1e9 && value < 1e11) return ago(value);
  return inline(String(value)).slice(0, 300);
}

function renderPanels() {
  for (const section of document.querySelectorAll("section.optional")) {
    const rows = state.panels[section.dataset.panel];
    section.hidden = !Array.isArray(rows);
    if (!Array.isArray(rows)) continue;
    const box = section.querySelector(".rows");
    if (!rows.length) {
      box.replaceChildren(el("p", "empty", "Nothing yet."));
      continue;
    }
    // data-columns (index.html) names each panel's columns; otherwise the first keys seen
    const keys = section.dataset.columns
      ? section.dataset.columns.split(",")
      : [...new Set(rows.slice(0, 20).flatMap((r) => Object.keys(r)))].slice(0, 8);
    const table = el("table");
    const head = el("tr");
    for (const k of keys) head.append(el("th", "", k.replace(/_name$/, "").replace(/_/g, " ")));
    table.append(head);
    for (const r of rows) {
      const tr = el("tr");
      for (const k of keys) tr.append(el("td", "", cellText(r[k])));
      table.append(tr);
    }
    box.replaceChildren(table);
  }
}

// ------------------------------------------------------------------ search

let searchTimer = null;

function onFilter() {
  state.filter = $("search").value.trim().toLowerCase();
  clearTimeout(searchTimer);
  searchTimer = setTimeout(renderFeed, 60);
  if (!state.filter) $("hits").hidden = true;
}

async function fullSearch() {
  const query = $("search").value.trim();
  const hits = $("hits");
  if (!query || !state.features.search) return;
  try {
    const r = await post("search", { query });
    if (!r.available) return;
    hits.hidden = false;
    hits.replaceChildren(
      el("li", "hits-head", `${r.hits.length} found in all mail`),
      ...r.hits.map((h) => {
        const li = renderMessage(h.message);
        li.append(el("div", "snippet", clean(h.snippet)));
        return li;
      }),
    );
  } catch (e) {
    banner(`Search failed: ${e.message}`, "error");
  }
}

// ------------------------------------------------------------------ compose

async function send(event) {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  const target = $("to").value;
  const body = { text, urgent: $("urgent").checked };
  if (target.startsWith("scope:")) body.scope = target.slice(6);
  else body.to = target.slice(5);
  if (state.replyTo) body.reply_to = state.replyTo;
  const status = $("compose-status");
  $("send").disabled = true;
  try {
    const r = await post("send", body);
    status.textContent = r.reach
      ? `sent ${r.sent[0]} — reaches ${inline(r.to_name)} by ${REACH[r.reach] || clean(r.reach)}`
      : `sent ${r.sent.length} message(s)${r.skipped && r.skipped.length ? `; skipped ${r.skipped.map(inline).join(", ")}` : ""}`;
    $("text").value = "";
    $("urgent").checked = false;
    stopReply();
  } catch (e) {
    status.textContent = `not sent: ${e.message}`;
  } finally {
    $("send").disabled = false;
  }
}

// ------------------------------------------------------------------ live updates

function apply(update) {
  switch (update.t) {
    case "snapshot": {
      state.up = update.up;
      state.me = update.me;
      state.daemon = update.daemon || {};
      state.peers = update.peers;
      state.files = update.files;
      state.audit = update.audit;
      state.panels = update.panels || {};
      state.features = update.features || {};
      state.clockSkew = update.now - Date.now() / 1000;
      state.messages = new Map(update.messages.map((m) => [m.id, m]));
      $("report").hidden = !state.features.report;
      daemonState(update.up, update.down_reason);
      renderPeers();
      renderFeed();
      renderFiles();
      renderAudit();
      renderPanels();
      for (const m of update.messages) noteMailForMe(m, false);
      break;
    }
    case "message": {
      state.messages.set(update.message.id, update.message);
      appendMessage(update.message);
      trimMessages();
      noteMailForMe(update.message, true);
      break;
    }
    case "changed":
      changeMessage(update.message);
      break;
    case "peers":
      state.peers = update.peers;
      state.clockSkew = update.now - Date.now() / 1000;
      if (state.me) state.me = state.peers.find((p) => p.id === state.me.id) || state.me;
      renderPeers();
      break;
    case "files":
      state.files = update.files;
      renderFiles();
      break;
    case "audit":
      state.audit = update.audit;
      renderAudit();
      break;
    case "panels":
      state.panels = update.panels;
      renderPanels();
      break;
    case "daemon":
      daemonState(update.up, update.reason);
      break;
    case "escalation":
      banner(
        `${update.event.waiting} message(s) for ${inline(update.event.name)} waiting ${Math.round(update.event.oldest_age)}s`,
        "warn",
      );
      break;
    case "ping":
      break;
  }
}

function daemonState(up, reason) {
  state.up = up;
  document.body.classList.toggle("down", !up);
  if (up) {
    setConn(`live · peersd ${state.daemon.version || ""} on ${inline(state.daemon.host || "")}`, "ok");
    banner("");
  } else {
    setConn("peersd is not running", "bad");
    banner(`peersd went away (${clean(reason || "no answer")}); waiting for it — this page catches up when it is back.`, "warn");
  }
}

let socket = null;
let lastFrame = Date.now();
let retry = 500;

function connect() {
  if (socket) {
    socket.onclose = null;
    socket.close();
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/live`);
  lastFrame = Date.now();
  socket.onopen = () => {
    retry = 500;
  };
  socket.onmessage = (event) => {
    lastFrame = Date.now();
    apply(JSON.parse(event.data));
  };
  socket.onclose = () => {
    setConn("reconnecting to the dashboard…", "wait");
    banner("Lost the connection to the dashboard; reconnecting…", "warn");
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 5000);
  };
}

// A laptop that slept, a network that changed: the socket may look open and be dead.
let lastTick = Date.now();
setInterval(() => {
  const t = Date.now();
  const slept = t - lastTick > 15000;
  lastTick = t;
  if (slept || t - lastFrame > SILENCE) connect();
}, 5000);
window.addEventListener("online", connect);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    flushAcks();
    if (Date.now() - lastFrame > SILENCE) connect();
  }
});
// Relative times ("3m ago") are re-rendered locally; nothing is asked of the server.
setInterval(renderPeers, 30000);

// ------------------------------------------------------------------ wiring

function setup() {
  $("compose").addEventListener("submit", send);
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("compose").requestSubmit();
    }
  });
  $("search").addEventListener("input", onFilter);
  $("search").addEventListener("keydown", (e) => {
    if (e.key === "Enter") fullSearch();
    if (e.key === "Escape") {
      $("search").value = "";
      onFilter();
      $("search").blur();
    }
  });
  document.addEventListener("keydown", (e) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (e.key === "/" && !typing) {
      e.preventDefault();
      $("search").focus();
    }
  });
  $("replying").addEventListener("click", stopReply);
  $("thread-filter").addEventListener("click", () => showThread(state.thread));
  if ("Notification" in window && Notification.permission === "default") {
    const b = $("notify");
    b.hidden = false;
    b.addEventListener("click", async () => {
      await Notification.requestPermission();
      b.hidden = true;
    });
  }
  connect();
}

setup();
