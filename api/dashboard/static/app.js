// The clipstream dashboard: the caller's executions, live from GET /v1/realtime.
//
// Feed protocol (api/realtime.py): `reset` carries a snapshot of the active executions and a
// cursor, `event` one execution's new state with its cursor and seq, `ping` keeps an idle
// connection honest. The page keeps the last cursor and reconnects with it (`since=`) after any
// close but a refusal (4401), so nothing that happened while it was away is missed; events it
// has already applied (same execution, seq not newer) are ignored. The session token lives in
// sessionStorage and travels only in the Authorization header, and in the WebSocket's query
// string, the one place a browser WebSocket can carry it.
"use strict";

(() => {
  const TOKEN_KEY = "clipstream.session";
  const RECENT_LIMIT = 20;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10_000;
  const STABLE_MS = 5_000; // a connection that lived this long resets the backoff
  const STALE_MS = 45_000; // the server pings every 15 s when idle: silence this long is a dead link
  const CLOSE_UNAUTHORIZED = 4401;
  const ACTIVE = new Set(["pending", "running"]);

  const { byId: $, el } = window.clipstreamDom; // dom.js

  const state = {
    token: null,
    executions: new Map(), // execution id -> {summary, seq}; seq 0: known only from a snapshot
    cursor: null,
    socket: null,
    openedAt: 0,
    attempt: 0,
    retryTimer: 0,
    staleTimer: 0,
    balanceTimer: 0,
    detailId: null,
    opener: null, // what had the focus when the detail opened
    detailLoading: false,
    detailAgain: false,
  };
  const rows = new Map(); // execution id -> its <li>

  // -- small helpers ----------------------------------------------------------------------------

  // Feed summaries carry times as ms since the epoch, REST ones as ISO strings.
  function toMs(value) {
    if (value === null || value === undefined) return null;
    return typeof value === "number" ? value : Date.parse(value);
  }

  function clock(value) {
    const ms = toMs(value);
    return ms === null ? "" : new Date(ms).toLocaleTimeString();
  }

  function moment(value) {
    const ms = toMs(value);
    return ms === null ? "" : new Date(ms).toLocaleString();
  }

  function coins(value) {
    const fixed = Number(value || 0).toFixed(6).replace(/0{1,4}$/, "");
    return `${fixed} coins`;
  }

  function json(value) {
    return JSON.stringify(value, null, 2);
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // The session changed (signed out, or in as someone else) while a read was on its way.
  class SessionChanged extends Error {}

  async function api(path) {
    const token = state.token;
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
    });
    const body = await response.json().catch(() => null);
    if (state.token !== token) throw new SessionChanged("signed out meanwhile");
    if (!response.ok) {
      const message = (body && body.error && body.error.message) || `HTTP ${response.status}`;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  // A REST read failed: a refused session signs out, anything else is shown where it happened.
  function readFailed(error, show) {
    if (error instanceof SessionChanged) return; // its answer belongs to no one on the page now
    if (error instanceof ApiError && error.status === 401) {
      signOut("Your session was refused (expired?): sign in again.");
    } else {
      show(error.message);
    }
  }

  // -- signing in and out -----------------------------------------------------------------------

  async function signIn(token) {
    state.token = token;
    let me;
    try {
      me = await api("/v1/me");
    } catch (error) {
      if (error instanceof SessionChanged) return;
      state.token = null;
      const refused = error instanceof ApiError && error.status === 401;
      // A server that is down (restarting) does not make a saved token bad: a reload retries.
      if (refused) sessionStorage.removeItem(TOKEN_KEY);
      $("sign-in-error").textContent = refused
        ? "That session token was refused."
        : `Could not sign in: ${error.message}`;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("sign-in-error").textContent = "";
    $("token").value = "";
    showAccount(me.account);
    $("sign-in").hidden = true;
    $("board").hidden = false;
    $("account").hidden = false;
    connect();
  }

  function signOut(reason = "") {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    dropSocket();
    clearTimeout(state.retryTimer);
    clearTimeout(state.balanceTimer);
    state.attempt = 0;
    state.cursor = null;
    state.executions.clear();
    closeDetail();
    render();
    $("board").hidden = true;
    $("account").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = reason;
    $("announce").textContent = "";
    setConnection("offline", "Signed out");
    $("token").focus();
  }

  function showAccount(account) {
    $("account-name").textContent = `${account.name} (${account.account_id})`;
    $("account-balance").textContent = `balance ${coins(account.balance_coins)}`;
  }

  // The balance moves when an execution ends (its provider costs are settled): re-read it then.
  function refreshBalanceSoon() {
    clearTimeout(state.balanceTimer);
    state.balanceTimer = setTimeout(async () => {
      try {
        showAccount((await api("/v1/me")).account);
      } catch (error) {
        readFailed(error, () => {}); // the next change tries again
      }
    }, 500);
  }

  // -- the live connection ----------------------------------------------------------------------

  function setConnection(name, text) {
    const node = $("connection");
    node.dataset.state = name;
    node.textContent = text;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    dropSocket(); // never two feeds at once (a second sign-in, an "online" event)
    const url = new URL("/v1/realtime", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", state.token);
    if (state.cursor) url.searchParams.set("since", state.cursor);
    setConnection("connecting", state.attempt ? "Reconnecting…" : "Connecting…");
    const socket = new WebSocket(url);
    state.socket = socket;
    socket.onopen = () => {
      if (state.socket !== socket) return;
      state.openedAt = Date.now();
      setConnection("live", "Live");
      watch(socket);
    };
    socket.onmessage = (message) => {
      if (state.socket !== socket) return;
      state.attempt = 0;
      watch(socket);
      handle(JSON.parse(message.data));
    };
    socket.onclose = (closed) => {
      if (state.socket !== socket) return;
      state.socket = null;
      clearTimeout(state.staleTimer);
      if (closed.code === CLOSE_UNAUTHORIZED) {
        signOut("The live feed refused this session (expired, or this page's origin is not allowed).");
        return;
      }
      if (state.openedAt && Date.now() - state.openedAt >= STABLE_MS) state.attempt = 0;
      state.openedAt = 0;
      reconnectLater(closed.reason);
    };
  }

  // Forget the current socket (its late callbacks are ignored) and close it.
  function dropSocket() {
    const socket = state.socket;
    state.socket = null;
    clearTimeout(state.staleTimer);
    if (socket) socket.close();
  }

  // Silence longer than the server's ping interval means a dead link that may never report a
  // close: drop it and reconnect.
  function watch(socket) {
    clearTimeout(state.staleTimer);
    state.staleTimer = setTimeout(() => {
      if (state.socket !== socket) return;
      dropSocket();
      reconnectLater("no message from the server");
    }, STALE_MS);
  }

  function reconnectLater(reason) {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2); // jitter: no herd
    state.attempt += 1;
    const why = reason ? ` (${reason})` : "";
    setConnection(
      "reconnecting",
      `Disconnected${why}: reconnecting in ${Math.ceil(delay / 1000)} s (attempt ${state.attempt})`,
    );
    state.retryTimer = setTimeout(connect, delay);
  }

  function handle(message) {
    if (message.type === "event") applyEvent(message);
    else if (message.type === "reset") applyReset(message);
    // "ping": nothing to do but stay alive (watch() was re-armed)
  }

  function applyEvent(message) {
    state.cursor = message.cursor;
    const id = message.execution_id;
    const known = state.executions.get(id);
    if (known && message.seq <= known.seq) return; // a duplicate: execution id + seq seen
    const summary = { ...(known ? known.summary : {}), ...message.execution };
    state.executions.set(id, { summary, seq: message.seq });
    render();
    if (state.detailId === id) refreshDetail();
    if (!ACTIVE.has(summary.status) && (!known || ACTIVE.has(known.summary.status))) {
      refreshBalanceSoon();
      const how = summary.error ? `ended in error: ${summary.error.message}` : "is done";
      $("announce").textContent = `Execution ${id} ${how}.`;
    }
  }

  // The cursor was missing or too old: what we hold may have gaps, so the snapshot replaces it
  // and the finished executions are read again.
  function applyReset(message) {
    state.cursor = message.cursor;
    state.executions.clear();
    for (const summary of message.executions) {
      state.executions.set(summary.execution_id, { summary, seq: 0 });
    }
    render();
    loadRecent();
    if (state.detailId) refreshDetail();
  }

  async function loadRecent() {
    let body;
    try {
      body = await api(`/v1/executions/me?limit=${RECENT_LIMIT}`);
    } catch (error) {
      readFailed(error, (text) => {
        $("recent-empty").textContent = `Could not read finished executions: ${text}`;
      });
      return;
    }
    for (const summary of body.executions) {
      const known = state.executions.get(summary.execution_id);
      // The feed is newer than any read that raced it: only snapshot-known entries are replaced.
      if (!known || known.seq === 0) {
        state.executions.set(summary.execution_id, { summary, seq: 0 });
      }
    }
    render();
  }

  // -- the lists --------------------------------------------------------------------------------

  function render() {
    const newestFirst = (a, b) => toMs(b.created_at) - toMs(a.created_at);
    const all = [...state.executions.values()].map((e) => e.summary).sort(newestFirst);
    const active = all.filter((s) => ACTIVE.has(s.status));
    const finished = all.filter((s) => !ACTIVE.has(s.status));
    for (const old of finished.slice(RECENT_LIMIT)) state.executions.delete(old.execution_id);
    const recent = finished.slice(0, RECENT_LIMIT);
    fill($("active"), active);
    fill($("recent"), recent);
    for (const id of [...rows.keys()]) {
      if (!state.executions.has(id)) rows.delete(id);
    }
    $("active-count").textContent = String(active.length);
    $("recent-count").textContent = String(recent.length);
    $("active-empty").hidden = active.length > 0;
    $("recent-empty").hidden = recent.length > 0;
  }

  // Put exactly ``summaries``' rows in ``list``, in order, moving rows rather than rebuilding.
  function fill(list, summaries) {
    summaries.forEach((summary, i) => {
      const row = rowFor(summary);
      const at = list.children[i];
      if (at !== row) list.insertBefore(row, at || null);
    });
    while (list.children.length > summaries.length) list.lastElementChild.remove();
  }

  function rowFor(summary) {
    let row = rows.get(summary.execution_id);
    if (!row) {
      row = buildRow(summary.execution_id);
      rows.set(summary.execution_id, row);
      if (summary.execution_id === state.detailId) {
        row.querySelector(".open").setAttribute("aria-current", "true");
      }
    }
    updateRow(row, summary);
    return row;
  }

  function buildRow(id) {
    const open = el(
      "button",
      { type: "button", class: "open", "aria-controls": "detail" },
      el(
        "span",
        { class: "line" },
        el("span", { class: "status" }),
        el("code", { class: "id", text: id }),
        el("span", { class: "kind" }),
      ),
      el(
        "span",
        { class: "line" },
        el("progress", { class: "progress", "aria-label": `Steps done of ${id}` }),
        el("span", { class: "steps" }),
        el("span", { class: "cost" }),
      ),
      el("span", { class: "failure" }),
      el("span", { class: "when" }),
    );
    return el("li", { class: "execution", "data-execution-id": id }, open);
  }

  function updateRow(row, s) {
    const part = (name) => row.querySelector(`.${name}`);
    const total = s.steps_total || 0;
    const done = s.steps_done || 0;
    row.dataset.status = s.status;
    const status = part("status");
    status.textContent = s.cancel_requested && ACTIVE.has(s.status) ? "cancelling" : s.status;
    status.dataset.status = s.status;
    part("kind").textContent = s.kind || "";
    const progress = part("progress");
    progress.max = Math.max(total, 1);
    progress.value = done;
    let steps = `${done} of ${total} steps`;
    if (ACTIVE.has(s.status) && s.current_step !== null && s.current_step !== undefined) {
      steps += ` · on step ${s.current_step + 1}`;
    }
    part("steps").textContent = steps;
    part("cost").textContent = coins(s.cost_coins);
    const failure = part("failure");
    failure.textContent = s.error ? `${s.error.code}: ${s.error.message}` : "";
    failure.hidden = !s.error;
    part("when").textContent = s.finished_at
      ? `finished ${clock(s.finished_at)}`
      : `requested ${clock(s.created_at)}`;
  }

  // -- the detail -------------------------------------------------------------------------------

  function openDetail(id) {
    state.detailId = id;
    state.opener = document.activeElement;
    markOpen();
    $("detail").hidden = false;
    $("detail-title").textContent = `Execution ${id}`;
    $("detail-error").textContent = "";
    $("detail-summary").replaceChildren();
    $("detail-steps").replaceChildren();
    $("detail").scrollIntoView({ block: "nearest" });
    $("detail-title").focus();
    refreshDetail();
  }

  function closeDetail() {
    const wasOpen = state.detailId !== null;
    state.detailId = null;
    markOpen();
    $("detail").hidden = true;
    // Back where the reader was, if that row is still on the page.
    if (wasOpen && state.opener && state.opener.isConnected) state.opener.focus();
    state.opener = null;
  }

  // The row whose detail is shown is marked for sight and for screen readers.
  function markOpen() {
    for (const [id, row] of rows) {
      const button = row.querySelector(".open");
      if (id === state.detailId) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  // One read in flight at a time; changes meanwhile ask for one more read after it.
  async function refreshDetail() {
    if (state.detailLoading) {
      state.detailAgain = true;
      return;
    }
    state.detailLoading = true;
    try {
      do {
        state.detailAgain = false;
        const id = state.detailId;
        if (!id) return;
        const body = await api(`/v1/executions/${encodeURIComponent(id)}`);
        if (state.detailId === id) renderDetail(body);
      } while (state.detailAgain);
    } catch (error) {
      readFailed(error, (text) => {
        $("detail-error").textContent = `Could not read this execution: ${text}`;
      });
    } finally {
      state.detailLoading = false;
    }
  }

  function renderDetail(body) {
    const e = body.execution;
    const facts = [
      ["Status", e.status],
      ["Kind", e.kind],
      ["Target", target(e.target)],
      ["Reporter", e.reporter_id],
      ["Requested", moment(e.created_at)],
      ["Started", moment(e.started_at)],
      ["Finished", moment(e.finished_at)],
      ["Fee", coins(e.fee_coins)],
      [ACTIVE.has(e.status) ? "Cost so far" : "Cost", coins(e.cost_coins)],
      ["Error", e.error ? `${e.error.code}: ${e.error.message}` : ""],
    ];
    $("detail-error").textContent = "";
    $("detail-summary").replaceChildren(
      ...facts
        .filter(([, value]) => value)
        .flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value })]),
    );
    const specs = (body.workflow && body.workflow.steps) || [];
    const ran = body.steps.map((step) => ({ ...step, ran: true }));
    const waiting = body.step_inputs.map((step) => ({ ...step, status: "not started" }));
    const steps = [...ran, ...waiting].sort((a, b) => a.step_index - b.step_index);
    $("detail-steps").replaceChildren(...steps.map((step) => stepItem(step, specs[step.step_index])));
  }

  function target(t) {
    if (!t) return "";
    const what = t.source || t.external_id || t.item_id || t.collection_id || "";
    return `${t.kind}${what ? ` · ${what}` : ""}`;
  }

  function stepItem(step, spec) {
    const head = [`${step.tool_id}`, step.status];
    if (step.ran) head.push(`${step.attempts} attempt${step.attempts === 1 ? "" : "s"}`);
    if (step.ran) head.push(coins(step.cost_coins));
    if (step.duration_ms !== null && step.duration_ms !== undefined) {
      head.push(`${step.duration_ms} ms`);
    }
    const item = el(
      "li",
      { class: "step", "data-step-index": String(step.step_index), "data-status": step.status },
      el("p", { class: "step-head", text: head.join(" · ") }),
    );
    if (spec && spec.prompt_text) {
      item.append(el("p", { class: "prompt", text: `Prompt: ${spec.prompt_text}` }));
    }
    if (step.error) {
      item.append(el("p", { class: "failure", text: `${step.error.code}: ${step.error.message}` }));
    }
    item.append(el("h4", { text: "Input" }), el("pre", { class: "input", text: json(step.input) }));
    if (step.ran) {
      const output =
        step.output !== null && step.output !== undefined
          ? json(step.output)
          : step.output_ref
            ? `stored as a blob: ${json(step.output_ref)}`
            : "(none yet)";
      item.append(el("h4", { text: "Output" }), el("pre", { class: "output", text: output }));
    }
    return item;
  }

  // -- wiring -----------------------------------------------------------------------------------

  function start() {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("sign-out").addEventListener("click", () => signOut());
    $("detail-close").addEventListener("click", closeDetail);
    for (const list of [$("active"), $("recent")]) {
      list.addEventListener("click", (event) => {
        const row = event.target.closest("[data-execution-id]");
        if (row) openDetail(row.dataset.executionId);
      });
    }
    // Back online: no need to wait out the backoff.
    window.addEventListener("online", () => {
      if (state.token && !state.socket) connect();
    });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
  }

  start();
})();
