// The orders/positions panel: the kill switch, today's P&L, positions and open orders.
//
// Polled from the API every POLL_MS (4 requests a round, one round at a time: 120 a minute
// for a visible tab, a tenth of the per-user throttle; a hidden tab does not poll). Each
// open position's LTP and unrealised P&L move with the ticks the dashboard's websocket
// already streams ("portal:ticks" events from dashboard.js), computed exactly on BigInts
// (money.js), never floats. A tick is used over the server's mark unless the server marked
// the position more recently. Nothing here changes an order: cancel and modify are in the
// API and the admin. Ages and times use the server's clock (from the HTTP Date header), in IST.
(function () {
  "use strict";
  var M = window.PortalMoney;
  var panel = document.getElementById("oms");
  if (!panel || !M) return;

  var POLL_MS = 2000;
  var BACKOFF_MAX_MS = 10000;  // failed rounds are retried at 2, 4, 8, then every 10 s
  var STALE_AFTER_MS = 10000;  // the panel says its data is old when no round succeeded for this long
  var REQUEST_TIMEOUT_MS = 8000;  // a request that hangs is given up (and the round retried)
  var MARK_TOLERANCE_MS = 1000;  // the server's Date header has whole seconds
  // Every status an order can still fill or change from (oms/state.py: PENDING | WORKING).
  var OPEN_STATUSES = [
    "PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "AMO REQ RECEIVED", "OPEN",
    "TRIGGER PENDING", "MODIFY VALIDATION PENDING", "MODIFY PENDING", "CANCEL PENDING"
  ];
  var URLS = {
    pnl: "/api/pnl/",
    positions: "/api/positions/",
    orders: "/api/orders/?status=" + encodeURIComponent(OPEN_STATUSES.join(",")),
    killSwitch: "/api/kill-switch/"
  };
  var TIME = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Kolkata", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"
  });
  var STAMP = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Kolkata", day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23"
  });
  var IST_OFFSET_MS = 330 * 60 * 1000;  // India has no daylight saving time
  var ZERO = M.parse("0");

  var el = function (id) { return document.getElementById(id); };
  var positionsBody = el("positions").tBodies[0];
  var ordersBody = el("orders").tBodies[0];
  var strategiesTable = el("pnl-strategies");
  var refreshNote = el("oms-refresh");

  var live = {};  // instrument_token -> {price: {n, s}, at: server ms}
  var positions = {};  // key -> {data: API row, row: <tr>}
  var positionsByToken = {};  // instrument_token -> [key]
  var pnl = null;
  var orders = [];
  var clockOffset = 0;  // server clock minus the browser's
  var lastSuccess = null;  // server ms of the last round that fully succeeded
  var killSwitchAt = null;  // server ms of the last kill switch state read
  var failures = 0;
  var timer = null;
  var inFlight = false;

  function serverNow() { return Date.now() + clockOffset; }

  // A moment in IST: the time, with the date when it is not today's.
  function when(ms) {
    var today = Math.floor((serverNow() + IST_OFFSET_MS) / 86400000);
    return (Math.floor((ms + IST_OFFSET_MS) / 86400000) === today ? TIME : STAMP).format(ms) + " IST";
  }

  // --- requests ----------------------------------------------------------------------------

  function RequestError(status, text, retryAfter) {
    this.status = status;
    this.message = text;
    this.retryAfter = retryAfter;
  }

  function get(url) {
    var sent = Date.now();
    var abort = new AbortController();
    var timeout = setTimeout(function () { abort.abort(); }, REQUEST_TIMEOUT_MS);
    var options = { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" },
      signal: abort.signal };
    return fetch(url, options).then(function (response) {
      var date = Date.parse(response.headers.get("Date") || "");
      if (!isNaN(date)) clockOffset = date + 500 - (sent + Date.now()) / 2;  // mid-second, mid-request
      var retry = parseInt(response.headers.get("Retry-After") || "", 10);
      return response.json().then(function (body) {
        if (response.ok) return body;
        throw new RequestError(response.status, (body && body.detail) || response.statusText, retry);
      }, function () {
        throw new RequestError(response.status, "the answer is not JSON", retry);
      });
    }).finally(function () { clearTimeout(timeout); });
  }

  function results(body) {
    return Array.isArray(body) ? body : (body && body.results) || [];
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(poll, delay);
  }

  function poll() {
    if (inFlight) return;
    if (document.hidden) return;  // resumed by visibilitychange
    inFlight = true;
    Promise.allSettled([get(URLS.killSwitch), get(URLS.pnl), get(URLS.positions), get(URLS.orders)])
      .then(function (answers) {
        inFlight = false;
        var errors = answers.filter(function (a) { return a.status === "rejected"; }).map(function (a) {
          return a.reason;
        });
        var value = function (i) { return answers[i].status === "fulfilled" ? answers[i].value : undefined; };
        applyKillSwitch(value(0), errors.length ? errors[0] : null);
        if (value(1) !== undefined) pnl = value(1);
        if (value(2) !== undefined) applyPositions(results(value(2)));
        if (value(3) !== undefined) applyOrders(value(3));
        renderTotals();
        if (!errors.length) {
          failures = 0;
          lastSuccess = serverNow();
          refreshStatus("", null);
          schedule(POLL_MS);
          return;
        }
        failures += 1;
        var error = errors[0];
        var delay = Math.min(BACKOFF_MAX_MS, POLL_MS * Math.pow(2, failures - 1));
        if (error && error.status === 429 && error.retryAfter > 0) delay = Math.max(delay, error.retryAfter * 1000);
        refreshStatus(describeError(error), delay);
        schedule(delay);
      });
  }

  function describeError(error) {
    if (error && error.name === "AbortError") return "no answer within " + REQUEST_TIMEOUT_MS / 1000 + " s";
    if (!(error instanceof RequestError)) return "the portal cannot be reached";
    if (error.status === 401) return "your session has ended: reload the page to log in again";
    if (error.status === 403) return "not allowed: " + error.message;
    if (error.status === 429) return "the API throttled this page";
    return "HTTP " + error.status + (error.message ? ": " + error.message : "");
  }

  function refreshStatus(problem, retryIn) {
    var age = lastSuccess === null ? null : serverNow() - lastSuccess;
    var stale = problem !== "" || age === null || age > STALE_AFTER_MS;
    panel.classList.toggle("oms-stale", stale && lastSuccess !== null);
    refreshNote.dataset.state = problem ? "error" : stale ? "stale" : "ok";
    refreshNote.className = problem || (stale && lastSuccess !== null) ? "warning" : "note";
    var text = lastSuccess === null ? "not loaded yet" : "updated " + when(lastSuccess);
    if (problem) text = "Could not refresh (" + problem + "); " + text + (retryIn ? ", retrying in " +
      Math.round(retryIn / 1000) + " s" : "");
    if (refreshNote.textContent !== text) refreshNote.textContent = text;
  }

  // --- the kill switch ------------------------------------------------------------------------

  function who(event) {
    if (!event) return "";
    var by = event.automatic ? "automatically" + (event.rule ? " (" + event.rule + ")" : "") :
      "by " + (event.by || "the system");
    var at = Date.parse(event.at);
    return by + (isNaN(at) ? "" : " at " + when(at)) + (event.reason ? ": " + event.reason : "");
  }

  var HEADLINES = {
    HALTED: "KILL SWITCH ENGAGED: trading halted, no new orders",
    REDUCING: "KILL SWITCH ENGAGED: reducing only, orders that do not reduce a position are refused"
  };

  // Never shows an old state as current: after STALE_AFTER_MS without a fresh read, unknown.
  function killSwitchUnknown(why) {
    var box = el("kill-switch");
    if (killSwitchAt !== null && serverNow() - killSwitchAt < STALE_AFTER_MS) return;  // read a moment ago
    box.dataset.state = "unknown";
    box.className = "kill-switch ks-unknown";
    setText(el("ks-headline"), "Kill switch state unknown");
    setText(el("ks-detail"), why ? "(" + why + ")" : "");
    el("ks-strategies").hidden = true;
  }

  function applyKillSwitch(status, error) {
    var box = el("kill-switch");
    var list = el("ks-strategies");
    if (status === undefined) {
      killSwitchUnknown(describeError(error));
      return;
    }
    killSwitchAt = serverNow();
    var engaged = status.strategies || [];
    var state = status.state;
    box.dataset.state = state;
    box.className = "kill-switch " + (state === "ACTIVE" ? (engaged.length ? "ks-partial" : "ks-active") :
      state === "REDUCING" ? "ks-reducing" : "ks-halted");
    el("ks-headline").textContent = HEADLINES[state] || (engaged.length ? "Trading active for the desk; " +
      engaged.length + " strateg" + (engaged.length === 1 ? "y" : "ies") + " stopped" : "Trading active");
    var last = status.last_event;
    el("ks-detail").textContent = state !== "ACTIVE" ? who(last) : last ? "kill switch released " + who(last) : "";
    list.textContent = "";
    engaged.forEach(function (event) {
      var item = document.createElement("li");
      item.className = event.state === "HALTED" ? "ks-item-halted" : "ks-item-reducing";
      item.textContent = event.strategy + ": " + (event.state === "HALTED" ? "halted" : "reducing only") + " " +
        who(event);
      list.appendChild(item);
    });
    list.hidden = !engaged.length;
  }

  // --- positions --------------------------------------------------------------------------------

  function keyOf(p) { return p.strategy + "|" + p.instrument_token + "|" + p.product; }

  function setText(cell, text, title) {
    if (cell.textContent !== text) cell.textContent = text;
    if (title !== undefined && cell.title !== title) cell.title = title;
  }

  function setMoney(cell, value) {
    setText(cell, M.format(value));
    var sign = M.sign(value);
    cell.classList.toggle("up", sign > 0);
    cell.classList.toggle("down", sign < 0);
  }

  function cells(row) {
    var map = {};
    for (var i = 0; i < row.cells.length; i++) map[row.cells[i].dataset.field] = row.cells[i];
    return map;
  }

  function newRow(fields) {
    var row = document.createElement("tr");
    fields.forEach(function (field) {
      var cell = document.createElement("td");
      cell.dataset.field = field[0];
      if (field[1]) cell.className = field[1];
      row.appendChild(cell);
    });
    return row;
  }

  var POSITION_FIELDS = [["symbol", "sym"], ["strategy"], ["product"], ["quantity", "num"], ["average_price", "num"],
    ["last_price", "num"], ["unrealised", "num"], ["realised", "num"], ["pnl", "num"]];

  // The price an open position is marked at: the latest streamed tick, unless the server
  // marked it later (the feed may not stream it, or this page's websocket is down).
  function markOf(p) {
    var tick = live[p.instrument_token];
    var server = M.parse(p.last_price);
    var markedAt = p.marked_at ? Date.parse(p.marked_at) : NaN;
    if (tick && (isNaN(markedAt) || tick.at + MARK_TOLERANCE_MS >= markedAt)) {
      return { price: tick.price, source: "live tick received " + when(tick.at) };
    }
    if (server === null) return { price: null, source: "no price yet" };
    return { price: server, source: isNaN(markedAt) ? "price at the last fill (no tick streamed for it here)" :
      "marked by the server at " + when(markedAt) };
  }

  function livePnl(p) {
    var realised = M.parse(p.realised) || ZERO;
    if (!p.quantity) return { mark: markOf(p), unrealised: ZERO, realised: realised };
    var mark = markOf(p);
    var unrealised = mark.price === null ? M.parse(p.unrealised) || ZERO : M.unrealised(p, mark.price);
    return { mark: mark, unrealised: unrealised, realised: realised };
  }

  function renderPosition(entry) {
    var p = entry.data, c = cells(entry.row), value = livePnl(p);
    entry.unrealised = value.unrealised;
    entry.row.classList.toggle("flat", !p.quantity);
    setText(c.symbol, p.tradingsymbol, p.exchange + ":" + p.tradingsymbol + " (" + p.instrument_token + ")");
    setText(c.strategy, p.strategy);
    setText(c.product, p.product);
    setText(c.quantity, String(p.quantity));
    c.quantity.classList.toggle("up", p.quantity > 0);
    c.quantity.classList.toggle("down", p.quantity < 0);
    var average = M.parse(p.average_price);
    setText(c.average_price, p.quantity && average ? M.formatPrice(average) : "–");
    setText(c.last_price, value.mark.price ? M.formatPrice(value.mark.price) : "–", value.mark.source);
    entry.row.dataset.mark = value.mark.source.indexOf("live") === 0 ? "live" : "server";
    if (p.quantity) setMoney(c.unrealised, value.unrealised); else setText(c.unrealised, "–");
    setMoney(c.realised, value.realised);
    setMoney(c.pnl, M.add(value.realised, value.unrealised));
  }

  function applyPositions(rows) {
    // Open positions first, then the flat ones traded today; each group as the API orders it.
    rows = rows.filter(function (p) { return p.quantity; }).concat(rows.filter(function (p) { return !p.quantity; }));
    var seen = {};
    positionsByToken = {};
    rows.forEach(function (p, index) {
      var key = keyOf(p);
      seen[key] = true;
      var entry = positions[key];
      if (!entry) {
        entry = positions[key] = { row: newRow(POSITION_FIELDS) };
        entry.row.dataset.key = key;
        entry.row.dataset.token = p.instrument_token;
      }
      entry.data = p;
      (positionsByToken[p.instrument_token] = positionsByToken[p.instrument_token] || []).push(key);
      renderPosition(entry);
      if (positionsBody.rows[index] !== entry.row) positionsBody.insertBefore(entry.row, positionsBody.rows[index] || null);
    });
    Object.keys(positions).forEach(function (key) {
      if (!seen[key]) {
        positions[key].row.remove();
        delete positions[key];
      }
    });
    var open = rows.filter(function (p) { return p.quantity; }).length;
    el("positions-count").textContent = rows.length ? open + " open" + (rows.length > open ? ", " +
      (rows.length - open) + " flat" : "") : "";
    showEmpty(positionsBody, !rows.length, "No positions today.");
  }

  function showEmpty(body, empty, text) {
    var row = body.querySelector("tr.empty");
    if (empty && !row) {
      row = document.createElement("tr");
      row.className = "empty";
      row.appendChild(document.createElement("td")).colSpan = 20;
      body.appendChild(row);
    }
    if (row && !empty) row.remove();
    if (row && empty) setText(row.cells[0], text);
  }

  // --- P&L ----------------------------------------------------------------------------------

  function renderTotals() {
    if (pnl === null) return;
    var strategies = {};
    (pnl.strategies || []).forEach(function (s) {
      strategies[s.strategy] = { name: s.strategy, mode: s.mode, realised: M.parse(s.realised) || ZERO,
        unrealised: ZERO, orders: s.orders, trades: s.trades, rejected: s.rejected };
    });
    Object.keys(positions).forEach(function (key) {
      var entry = positions[key];
      if (!entry.data.quantity) return;
      var s = strategies[entry.data.strategy] || (strategies[entry.data.strategy] = {
        name: entry.data.strategy, mode: "", realised: ZERO, unrealised: ZERO, orders: 0, trades: 0, rejected: 0 });
      s.unrealised = M.add(s.unrealised, entry.unrealised || ZERO);
    });
    var list = Object.keys(strategies).sort().map(function (name) { return strategies[name]; });
    var realised = M.sum(list.map(function (s) { return s.realised; }));
    var unrealised = M.sum(list.map(function (s) { return s.unrealised; }));
    setMoney(el("pnl-realised"), realised);
    setMoney(el("pnl-unrealised"), unrealised);
    setMoney(el("pnl-total"), M.add(realised, unrealised));
    var count = function (field) { return String(list.reduce(function (t, s) { return t + (s[field] || 0); }, 0)); };
    setText(el("pnl-orders"), count("orders"));
    setText(el("pnl-trades"), count("trades"));
    setText(el("pnl-rejected"), count("rejected"));
    strategiesTable.hidden = list.length < 2;
    if (list.length < 2) return;
    var body = strategiesTable.tBodies[0];
    list.forEach(function (s, index) {
      var row = body.rows[index] || body.appendChild(newRow([["strategy", "sym"], ["mode"], ["realised", "num"],
        ["unrealised", "num"], ["pnl", "num"], ["orders", "num"], ["trades", "num"], ["rejected", "num"]]));
      var c = cells(row);
      row.dataset.strategy = s.name;
      setText(c.strategy, s.name);
      setText(c.mode, s.mode);
      setMoney(c.realised, s.realised);
      setMoney(c.unrealised, s.unrealised);
      setMoney(c.pnl, M.add(s.realised, s.unrealised));
      setText(c.orders, String(s.orders));
      setText(c.trades, String(s.trades));
      setText(c.rejected, String(s.rejected));
    });
    while (body.rows.length > list.length) body.deleteRow(-1);
  }

  // --- open orders ----------------------------------------------------------------------------

  var ORDER_FIELDS = [["age"], ["symbol", "sym"], ["strategy"], ["side"], ["type"], ["quantity", "num"],
    ["filled", "num"], ["price", "num"], ["trigger", "num"], ["status"]];

  function age(ms) {
    var seconds = Math.max(0, Math.floor(ms / 1000));
    if (seconds < 60) return seconds + "s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + "m " + String(seconds % 60).padStart(2, "0") + "s";
    var hours = Math.floor(minutes / 60);
    if (hours < 24) return hours + "h " + String(minutes % 60).padStart(2, "0") + "m";
    return Math.floor(hours / 24) + "d " + String(hours % 24).padStart(2, "0") + "h";
  }

  function priceText(text) {
    var value = M.parse(text);
    return value && M.sign(value) ? M.formatPrice(value) : "–";
  }

  function applyOrders(body) {
    orders = results(body);
    var existing = {};
    for (var i = 0; i < ordersBody.rows.length; i++) {
      if (ordersBody.rows[i].dataset.id) existing[ordersBody.rows[i].dataset.id] = ordersBody.rows[i];
    }
    orders.forEach(function (o, index) {
      var row = existing[o.id];
      delete existing[o.id];
      if (!row) {
        row = newRow(ORDER_FIELDS);
        row.dataset.id = o.id;
      }
      var c = cells(row);
      row.dataset.placed = o.placed_at;
      setText(c.symbol, o.tradingsymbol, o.exchange + ":" + o.tradingsymbol + ", order #" + o.id +
        (o.broker_order_id ? ", " + o.broker + " " + o.broker_order_id : ""));
      setText(c.strategy, o.strategy || "");
      setText(c.side, o.transaction_type);
      c.side.className = o.transaction_type === "BUY" ? "up" : "down";
      setText(c.type, o.order_type + " · " + o.product + (o.validity !== "DAY" ? " · " + o.validity : ""),
        o.variety !== "regular" ? "variety " + o.variety : "");
      setText(c.quantity, String(o.quantity));
      setText(c.filled, String(o.filled_quantity));
      setText(c.price, o.order_type === "MARKET" || o.order_type === "SL-M" ? "MKT" : priceText(o.price));
      setText(c.trigger, priceText(o.trigger_price));
      setText(c.status, o.status, o.status_message || "");
      if (ordersBody.rows[index] !== row) ordersBody.insertBefore(row, ordersBody.rows[index] || null);
    });
    Object.keys(existing).forEach(function (id) { existing[id].remove(); });
    var count = Array.isArray(body) ? orders.length : body.count;
    el("orders-count").textContent = orders.length ? (count > orders.length ? "newest " + orders.length + " of " +
      count : String(count)) : "";
    showEmpty(ordersBody, !orders.length, "No open orders.");
    renderAges();
  }

  function renderAges() {
    var now = serverNow();
    for (var i = 0; i < ordersBody.rows.length; i++) {
      var row = ordersBody.rows[i];
      if (!row.dataset.placed) continue;
      var placed = Date.parse(row.dataset.placed);
      var cell = row.cells[0];
      setText(cell, isNaN(placed) ? "–" : age(now - placed), isNaN(placed) ? "" : "placed " + when(placed));
    }
  }

  // --- live ticks from the dashboard's websocket ------------------------------------------------

  document.addEventListener("portal:ticks", function (event) {
    var changed = false;
    event.detail.forEach(function (tick) {
      var price = M.parse(tick.last_price);
      if (price === null) return;
      var received = tick.received_at ? Date.parse(tick.received_at) : NaN;
      live[tick.instrument_token] = { price: price, at: isNaN(received) ? serverNow() : received };
      (positionsByToken[tick.instrument_token] || []).forEach(function (key) {
        if (positions[key]) {
          renderPosition(positions[key]);
          changed = true;
        }
      });
    });
    if (changed) renderTotals();
  });

  // Instruments the feed stopped streaming: their last tick is no longer live.
  document.addEventListener("portal:removed", function (event) {
    event.detail.forEach(function (token) {
      delete live[token];
      (positionsByToken[token] || []).forEach(function (key) { if (positions[key]) renderPosition(positions[key]); });
    });
    renderTotals();
  });

  document.addEventListener("portal:oms", function () {
    if (!inFlight && !failures) schedule(0);
  });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) schedule(0);
  });
  setInterval(function () {
    renderAges();
    if (!failures) refreshStatus("", null);
    if (el("kill-switch").dataset.state !== "unknown") killSwitchUnknown("no answer from the portal");
  }, 1000);
  poll();
})();
