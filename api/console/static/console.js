// The clipstream operator console: the whole system, polled from the admin API.
//
// Every POLL_MS the page reads GET /admin/overview (partitions, workers, lease holders, rates)
// and redraws; GET /admin/dead-letters when the overview's count of them moves (or every
// DEAD_REFRESH_MS). A retry is POST /admin/dead-letters/{id}/retry; an
// execution's history is GET /admin/executions/{id}. The admin token lives in sessionStorage and
// travels only in the Authorization header. A 401 signs out; any other failure keeps the last
// figures on screen, marked as stale, and the next poll tries again.
"use strict";

(() => {
  const TOKEN_KEY = "clipstream.admin";
  const POLL_MS = 2_000;
  const SVG = "http://www.w3.org/2000/svg";

  const { byId: $, el } = window.clipstreamDom; // dom.js

  const state = {
    token: null,
    timer: 0,
    polling: false,
    generation: 0, // bumped at each sign-in and sign-out: late answers of another session are dropped
    deadCount: -1, // dead letters the list shows: it is read again when the overview's count moves
    deadAt: 0,
  };
  const DEAD_REFRESH_MS = 30_000; // and at least this often

  // -- small helpers ----------------------------------------------------------------------------

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  function cell(value, cls = "") {
    return el("td", { class: cls, text: value === null || value === undefined ? "–" : String(value) });
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1_000) return `${ms} ms`;
    const s = ms / 1_000;
    if (s < 120) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    const m = s / 60;
    if (m < 120) return `${m.toFixed(0)} min`;
    return `${(m / 60).toFixed(1)} h`;
  }

  function moment(iso) {
    return iso ? new Date(Date.parse(iso)).toLocaleString() : "–";
  }

  function clock(iso) {
    return iso ? new Date(Date.parse(iso)).toLocaleTimeString() : "";
  }

  function number(n) {
    return Number(n || 0).toLocaleString();
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  class SessionChanged extends Error {}

  async function api(path, options = {}) {
    const generation = state.generation;
    const response = await fetch(path, {
      method: options.method || "GET",
      headers: {
        Authorization: `Bearer ${state.token}`,
        Accept: "application/json",
        ...(options.body ? { "Content-Type": "application/json" } : {}),
      },
      body: options.body ? JSON.stringify(options.body) : undefined,
      cache: "no-store",
    });
    const body = await response.json().catch(() => null);
    if (generation !== state.generation) throw new SessionChanged("signed out meanwhile");
    if (!response.ok) {
      const message = (body && body.error && body.error.message) || `HTTP ${response.status}`;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  function failed(error, show) {
    if (error instanceof SessionChanged) return;
    if (error instanceof ApiError && error.status === 401) {
      signOut("The admin token was refused: sign in again.");
    } else {
      show(error.message);
    }
  }

  function connection(kind, text) {
    const node = $("connection");
    node.dataset.state = kind;
    node.textContent = text;
  }

  // -- signing in and out -----------------------------------------------------------------------

  async function signIn(token) {
    state.token = token;
    state.generation += 1;
    connection("connecting", "Connecting…");
    try {
      const overview = await api("/admin/overview");
      sessionStorage.setItem(TOKEN_KEY, token);
      $("sign-in").hidden = true;
      $("board").hidden = false;
      $("account").hidden = false;
      $("sign-in-error").textContent = "";
      draw(overview);
      schedule();
      refreshDead();
    } catch (error) {
      if (error instanceof SessionChanged) return;
      const refused = error instanceof ApiError && error.status === 401;
      signOut(refused ? "That admin token was refused." : `Cannot reach the API: ${error.message}`);
    }
  }

  function signOut(message = "") {
    state.generation += 1;
    state.deadCount = -1;
    state.token = null;
    clearTimeout(state.timer);
    sessionStorage.removeItem(TOKEN_KEY);
    $("board").hidden = true;
    $("account").hidden = true;
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = message;
    $("token").value = "";
    connection("offline", "Signed out");
  }

  // -- polling ----------------------------------------------------------------------------------

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    if (!state.token || state.polling) return;
    state.polling = true;
    try {
      const overview = await api("/admin/overview");
      draw(overview);
      const stale = Date.now() - state.deadAt > DEAD_REFRESH_MS;
      if (overview.totals.dead_letters !== state.deadCount || stale) await refreshDead();
      $("overview-error").textContent = "";
    } catch (error) {
      failed(error, (message) => {
        connection("reconnecting", "Stale: retrying");
        $("overview-error").textContent = `Last poll failed: ${message}`;
      });
    } finally {
      state.polling = false;
      if (state.token) schedule();
    }
  }

  // -- drawing the overview ---------------------------------------------------------------------

  function draw(o) {
    connection("live", "Live");
    $("updated").textContent = `updated ${clock(o.at)}`;
    $("meta").textContent =
      `${o.partitions_count} partitions · projection v${o.projection_version} · ` +
      (o.archive ? `archive ${o.archive}` : "no archive");
    drawTotals(o.totals);
    drawChart(o.rates);
    drawPartitions(o.partitions);
    drawWorkers(o.workers);
    drawHolders(o.projectors, o.archivers);
  }

  function drawTotals(t) {
    const figures = [
      ["queued", t.queued, false],
      ["leased", t.leased, false],
      ["projection lag", t.lag_entries, false],
      ["dead letters", t.dead_letters, t.dead_letters > 0],
      ["live workers", t.live_workers, t.live_workers === 0],
      ["log entries", t.log_entries, false],
    ];
    $("totals").replaceChildren(
      ...figures.map(([name, value, alert]) =>
        el(
          "div",
          { "data-total": name },
          el("dt", { text: name }),
          el("dd", { text: number(value), "data-alert": String(alert) }),
        ),
      ),
    );
  }

  function drawChart(rates) {
    const points = rates.points;
    const width = 600;
    const height = 160;
    const left = 34;
    const bottom = 18;
    const top = 8;
    const max = Math.max(1, ...points.flatMap((p) => [p.requested, p.done, p.error]));
    const x = (i) => left + (i * (width - left - 4)) / Math.max(1, points.length - 1);
    const y = (v) => top + (1 - v / max) * (height - top - bottom);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
    root.append(
      svg("line", { class: "axis", x1: left, y1: y(0), x2: width, y2: y(0) }),
      svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }),
    );
    const label = (text, attrs) => {
      const node = svg("text", attrs);
      node.textContent = text;
      return node;
    };
    root.append(label(String(max), { x: left - 4, y: top + 9, "text-anchor": "end" }));
    root.append(label("0", { x: left - 4, y: y(0), "text-anchor": "end" }));
    if (points.length) {
      root.append(label(clock(points[0].at), { x: left, y: height - 3 }));
      root.append(label(clock(points[points.length - 1].at), { x: width, y: height - 3, "text-anchor": "end" }));
    }
    for (const kind of ["requested", "done", "error"]) {
      const path = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[kind]).toFixed(1)}`);
      root.append(svg("path", { class: kind, d: path.join(" "), "data-series": kind }));
    }
    $("chart").replaceChildren(root);
    const sum = (kind) => points.reduce((n, p) => n + p[kind], 0);
    $("chart").setAttribute(
      "aria-label",
      `last 10 minutes: ${sum("requested")} accepted, ${sum("done")} done, ${sum("error")} in error`,
    );
    const behind = rates.current_to && Date.parse(rates.current_to) < Date.now() - 30_000;
    $("rates-note").textContent = behind ? `counted up to ${clock(rates.current_to)}` : "";
  }

  function drawPartitions(parts) {
    const body = $("partitions").tBodies[0];
    body.replaceChildren(
      ...parts.map((p) => {
        const lag = p.lag_entries ? `${number(p.lag_entries)}${p.lag_capped ? "+" : ""} · ${duration(p.lag_ms)}` : "0";
        const holder = (id, ttl) => (id ? `${id} (${duration(ttl)})` : "none");
        const row = el(
          "tr",
          { "data-partition": String(p.partition), "data-alert": String(p.dead_letters > 0) },
          cell(p.partition, "num"),
          cell(number(p.log_entries), "num log"),
          cell(number(p.queued), "num queued"),
          cell(p.oldest_queued_ms === null ? "–" : duration(p.oldest_queued_ms), "num"),
          cell(number(p.leased), "num leased"),
          cell(number(p.dead_letters), "num dead"),
          cell(p.checkpoint || "none", "mono checkpoint"),
          cell(lag, "num lag"),
          cell(holder(p.projector, p.projector_ttl_ms), "mono"),
          cell(holder(p.archiver, p.archiver_ttl_ms), "mono"),
          cell(
            p.schedules ? `${p.schedules} (${p.schedules_overdue}${p.overdue_ms ? `, ${duration(p.overdue_ms)}` : ""})` : "0",
            "num",
          ),
        );
        return row;
      }),
    );
  }

  function drawWorkers(workers) {
    $("workers-count").textContent = String(workers.filter((w) => w.live).length);
    $("workers-empty").hidden = workers.length > 0;
    $("workers").hidden = workers.length === 0;
    $("workers").tBodies[0].replaceChildren(
      ...workers.map((w) => {
        const held = Object.entries(w.leases).map(([p, n]) => `p${p}: ${n}`).join(", ");
        return el(
          "tr",
          { "data-worker": w.worker_id },
          cell(w.worker_id, "mono"),
          el("td", {
            class: w.live ? "state-live" : "state-gone",
            text: w.live ? "live" : w.beat_ms === null ? "no heartbeat" : `silent ${duration(w.beat_ms)}`,
          }),
          cell(w.leases_held ? `${w.leases_held} (${held})` : "0", "num"),
        );
      }),
    );
  }

  function drawHolders(projectors, archivers) {
    const items = [
      ...projectors.map((h) => ["projector", h]),
      ...archivers.map((h) => ["archiver", h]),
    ].map(([role, h]) =>
      el("li", { text: `${role} ${h.holder_id}: partitions ${h.partitions.join(", ")}` }),
    );
    if (!projectors.length) items.unshift(el("li", { class: "empty", text: "No projector holds a partition." }));
    $("holders").replaceChildren(...items);
  }

  // -- dead letters -----------------------------------------------------------------------------

  async function refreshDead() {
    try {
      const body = await api("/admin/dead-letters");
      drawDead(body.dead_letters);
      state.deadCount = body.dead_letters.length;
      state.deadAt = Date.now();
      $("dead-error").textContent = "";
    } catch (error) {
      failed(error, (message) => {
        $("dead-error").textContent = `Cannot list the dead letters: ${message}`;
      });
    }
  }

  function drawDead(letters) {
    $("dead-count").textContent = String(letters.length);
    $("dead-empty").hidden = letters.length > 0;
    $("dead").hidden = letters.length === 0;
    $("dead").tBodies[0].replaceChildren(
      ...letters.map((d) => {
        const action = el("td");
        if (d.retriable) {
          const button = el("button", {
            type: "button",
            class: "retry",
            text: "Retry",
            "aria-label": `Retry ${d.execution_id}`,
          });
          button.addEventListener("click", () => retry(d.execution_id, button));
          action.append(button);
        } else {
          action.textContent = "not an execution";
        }
        const open = el("button", { type: "button", class: "link", text: d.execution_id || d.entry_id });
        if (d.execution_id) open.addEventListener("click", () => openHistory(d.execution_id));
        else open.disabled = true;
        return el(
          "tr",
          { "data-dead-id": d.dead_id, "data-execution-id": d.execution_id || "" },
          cell(d.partition, "num"),
          el("td", { class: "mono" }, open),
          cell(d.kind),
          cell(d.deliveries, "num"),
          cell(moment(d.at)),
          cell(d.reason),
          action,
        );
      }),
    );
  }

  async function retry(executionId, button) {
    button.disabled = true;
    $("dead-error").textContent = "";
    $("dead-status").textContent = "";
    try {
      const body = await api(`/admin/dead-letters/${encodeURIComponent(executionId)}/retry`, {
        method: "POST",
        body: { operator: "console" },
      });
      $("dead-status").textContent =
        `${body.retry.execution_id} retried: queued again, it resumes from its first unfinished step.`;
      await refreshDead();
    } catch (error) {
      button.disabled = false;
      failed(error, (message) => {
        $("dead-error").textContent = `Not retried: ${message}`;
      });
    }
  }

  // -- one execution's history ------------------------------------------------------------------

  async function openHistory(executionId) {
    $("search-id").value = executionId;
    $("search-error").textContent = "";
    try {
      const body = await api(`/admin/executions/${encodeURIComponent(executionId)}`);
      drawHistory(body);
    } catch (error) {
      $("history").hidden = true;
      failed(error, (message) => {
        $("search-error").textContent = message;
      });
    }
  }

  function drawHistory(body) {
    const e = body.detail.execution;
    const facts = [
      ["execution", e.execution_id],
      ["owner", body.owner],
      ["kind", e.kind],
      ["status", e.error ? `${e.status} (${e.error.code}: ${e.error.message})` : e.status],
      ["steps", `${e.steps_done} of ${e.steps_total} done`],
      ["created", moment(e.created_at)],
      ["finished", moment(e.finished_at)],
    ];
    $("history-summary").replaceChildren(
      ...facts.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value })]),
    );
    $("history-summary").dataset.status = e.status;
    $("history-events").replaceChildren(
      ...body.events.map((event) => {
        const { type, seq, at, execution_id: _, schema: __, ...rest } = event;
        const details = el("details", {}, el("summary", { text: "fields" }), el("pre", { text: JSON.stringify(rest, null, 2) }));
        return el(
          "li",
          { "data-type": type, "data-seq": String(seq) },
          el("span", { class: "type", text: type }),
          el("span", { class: "when", text: ` seq ${seq} · ${new Date(at).toLocaleTimeString()}` }),
          details,
        );
      }),
    );
    $("history").hidden = false;
  }

  // -- wiring -----------------------------------------------------------------------------------

  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) signIn(token);
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("search-id").value.trim();
    if (id) openHistory(id);
  });

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
})();
