// Live ticks on the dashboard: one websocket, rows updated in place, reconnect with backoff.
//
// A row whose instrument the feed stopped streaming ({"type": "removed"}) turns grey,
// marked "not streaming", with its last price. A row without a tick for STALE_SECONDS
// while its exchange trades is marked "stale"; while it does not, "market closed" with the
// reason (weekend, the holiday, after the close) and the next open. Whether an exchange
// trades comes from the server's market calendar with every status frame ("market"), by
// the server's clock (NSE's weekday hours by the browser's until one arrives). Time is the exchange's
// timestamp in IST (full mode only: quote and LTP packets carry none), never the
// browser's clock. Bid/Ask show only while a visible instrument streams in full mode
// (Kite sends depth only then). No inline script anywhere: the page runs under a
// Content-Security-Policy with script-src 'self'. Ticks and removals are passed on as
// "portal:ticks" and "portal:removed" document events (the orders/positions panel uses them).
(function () {
  "use strict";
  var SPARK_POINTS = 60;
  var STALE_SECONDS = 5;
  var REMOVED_GRACE_MS = 2000;  // ticks already in flight when the feed unsubscribed
  var CLOCK_TOLERANCE_MS = 60000;  // received_at older than this is trusted over the browser's clock
  var IST_OFFSET_MS = 330 * 60 * 1000;  // India has no daylight saving time
  var MARKET_OPEN = 9 * 60 + 15, MARKET_CLOSE = 15 * 60 + 30;  // minutes after midnight IST
  var TIME = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Kolkata", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"
  });
  var DAY = new Intl.DateTimeFormat("en-GB", { timeZone: "Asia/Kolkata", day: "2-digit", month: "short" });

  var table = document.getElementById("ticks");
  var body = table.tBodies[0];
  var wsState = document.getElementById("ws-state");
  var filterBox = document.getElementById("filter");
  var depthNote = document.getElementById("depth-note");
  var history = {};
  var removedAt = {};
  var depthChanged = true;  // a row's depth, a filter or a removal changed: recount the Bid/Ask columns
  var socket = null;
  var market = null;  // the server's market status: {at: its clock (ms), receivedAt: ours, exchanges}
  var retry = 0;
  var retryTimer = null;

  function setState(state, text) {
    wsState.dataset.state = state;
    wsState.className = "pill " + (state === "live" ? "pill-ok" : state === "connecting" ? "pill-wait" : "pill-bad");
    wsState.textContent = text;
  }

  // --- rows ------------------------------------------------------------------------------

  function rowFor(tick) {
    var row = document.getElementById("row-" + tick.instrument_token);
    if (row) return row;
    var empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    row = document.createElement("tr");
    row.id = "row-" + tick.instrument_token;
    row.dataset.token = tick.instrument_token;
    row.dataset.search = (tick.tradingsymbol + " " + tick.exchange).toLowerCase();
    var cells = '<td class="sym"><span class="name"></span> <span class="badge" hidden></span></td><td></td>';
    ["last_price", "change", "change_percent", "volume", "oi", "bid", "ask"].forEach(function (f) {
      var depth = f === "bid" || f === "ask" ? " depth" : "";
      cells += '<td class="num' + (f === "last_price" ? " ltp" : "") + depth + '" data-field="' + f + '">–</td>';
    });
    cells += '<td data-field="time">–</td><td><canvas class="spark" width="100" height="22"></canvas></td>';
    row.innerHTML = cells;
    row.querySelector(".name").textContent = tick.tradingsymbol;
    row.cells[1].textContent = tick.exchange;
    body.appendChild(row);
    applyFilter(row);
    return row;
  }

  function setCell(row, field, value) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (cell && value !== undefined && value !== null && cell.textContent !== String(value)) cell.textContent = value;
    return cell;
  }

  function setBadge(row, text, title) {
    var badge = row.querySelector(".badge");
    if (!badge) return;
    badge.hidden = !text;
    if (badge.textContent !== text) badge.textContent = text;
    badge.title = title || "";
  }

  function formatNumber(value) {
    return value === undefined || value === null ? undefined : Number(value).toLocaleString("en-IN");
  }

  function istDay(ms) {
    return Math.floor((ms + IST_OFFSET_MS) / 86400000);
  }

  // The exchange's time in IST; the date too when it is not today's.
  function formatStamp(iso) {
    var ms = Date.parse(iso);
    if (isNaN(ms)) return "–";
    var text = TIME.format(ms);
    return istDay(ms) === istDay(Date.now()) ? text : DAY.format(ms) + " " + text;
  }

  function marketOpen(ms) {
    var ist = new Date(ms + IST_OFFSET_MS);
    var day = ist.getUTCDay();
    var minutes = ist.getUTCHours() * 60 + ist.getUTCMinutes();
    return day !== 0 && day !== 6 && minutes >= MARKET_OPEN && minutes < MARKET_CLOSE;
  }

  // Whether ``exchange`` trades at ``now`` (browser ms) by the server's calendar and clock:
  // {open, why} or null before the server said. Between frames its clock runs on with ours.
  function marketFor(exchange, now) {
    if (!market) return null;
    var status = market.exchanges[exchange] || market.exchanges.NSE;
    if (!status) return null;
    var serverNow = market.at + (now - market.receivedAt);
    var open = status.open;
    if (open && status.closes_at && serverNow >= Date.parse(status.closes_at)) open = false;
    if (!open && status.next_open && serverNow >= Date.parse(status.next_open)) open = true;
    if (open === status.open) return { open: open, why: status.detail };
    return { open: open, why: open ? exchange + " open" : exchange + " closed" };
  }

  function applyMarket(sent) {
    market = { at: Date.parse(sent.at), receivedAt: Date.now(), exchanges: sent.exchanges || {} };
    if (isNaN(market.at)) market = null;
    renderMarket(Date.now());
  }

  // The market line: open while an exchange on the page trades, else closed and why.
  function renderMarket(now) {
    var pill = document.getElementById("market-state");
    if (!pill || !market) return;
    var seen = {}, exchanges = [];
    for (var i = 0; i < body.rows.length; i++) {
      var exchange = body.rows[i].dataset.token !== undefined && body.rows[i].cells[1] ? body.rows[i].cells[1].textContent : "";
      if (exchange && !seen[exchange]) { seen[exchange] = true; exchanges.push(exchange); }
    }
    if (!exchanges.length) exchanges = ["NSE"];
    var open = [], closed = null;
    exchanges.forEach(function (exchange) {
      var state = marketFor(exchange, now), status = market.exchanges[exchange] || market.exchanges.NSE;
      if (!state || !status) return;
      if (state.open) open.push(state.open === status.open ? status.detail : exchange + " open");
      else if (!closed || (status.next_open && (!closed.next_open || status.next_open < closed.next_open))) closed = status;
    });
    var text = open.length ? "market open: " + open.join("; ")
      : closed ? "market closed: " + (closed.why || closed.reason) + (closed.opens ? " (" + closed.exchange + " opens " + closed.opens + ")" : "")
      : "market: unknown";
    if (pill.textContent !== text) pill.textContent = text;
    pill.dataset.open = open.length ? "1" : "0";
    pill.className = "pill " + (open.length ? "pill-ok" : "pill-wait");
  }

  // The sparkline spans the whole box from its first points.
  function draw(canvas, points) {
    var ctx = canvas.getContext("2d");
    var width = canvas.width, height = canvas.height;
    ctx.clearRect(0, 0, width, height);
    if (!points.length) return;
    var min = Math.min.apply(null, points), max = Math.max.apply(null, points);
    var span = max - min;
    var last = points.length - 1;
    function y(p) { return span ? height - 2 - ((p - min) / span) * (height - 4) : height / 2; }
    ctx.beginPath();
    if (last === 0) {
      ctx.moveTo(1, y(points[0]));
      ctx.lineTo(width - 1, y(points[0]));
    } else {
      points.forEach(function (p, i) {
        var x = 1 + (i / last) * (width - 2);
        if (i === 0) ctx.moveTo(x, y(p)); else ctx.lineTo(x, y(p));
      });
    }
    ctx.strokeStyle = points[last] >= points[0] ? "#3fb950" : "#f85149";
    ctx.lineWidth = 1.2;
    ctx.stroke();
  }

  function applyTick(tick) {
    var token = tick.instrument_token;
    var now = Date.now();
    if (removedAt[token] !== undefined) {
      if (now - removedAt[token] < REMOVED_GRACE_MS) return;  // sent before the feed unsubscribed it
      delete removedAt[token];
    }
    var row = rowFor(tick);
    if (row.classList.contains("not-streaming")) {
      row.classList.remove("not-streaming");
      depthChanged = true;
    }
    var cell = row.querySelector('[data-field="last_price"]');
    var previous = cell.dataset.value;
    if (previous !== tick.last_price) {
      cell.textContent = tick.last_price;
      cell.dataset.value = tick.last_price;
      if (previous !== undefined) {
        var up = Number(tick.last_price) >= Number(previous);
        cell.classList.remove("flash-up", "flash-down");
        void cell.offsetWidth;  // restart the animation
        cell.classList.add(up ? "flash-up" : "flash-down");
      }
    }
    if (tick.change !== undefined) {
      var negative = String(tick.change).charAt(0) === "-";
      setCell(row, "change", tick.change).className = "num " + (negative ? "down" : "up");
      setCell(row, "change_percent", tick.change_percent + "%").className = "num " + (negative ? "down" : "up");
    }
    setCell(row, "volume", formatNumber(tick.volume));
    setCell(row, "oi", formatNumber(tick.oi));
    var depth = tick.mode === "full" && tick.segment !== "INDICES";
    row.dataset.mode = tick.mode;
    if (row.dataset.depth !== (depth ? "1" : "0")) {
      row.dataset.depth = depth ? "1" : "0";
      depthChanged = true;
    }
    setCell(row, "bid", depth && tick.bid !== undefined ? tick.bid + " × " + tick.bid_quantity : "–");
    setCell(row, "ask", depth && tick.ask !== undefined ? tick.ask + " × " + tick.ask_quantity : "–");
    var stamp = tick.exchange_timestamp || tick.last_trade_time;
    var time = setCell(row, "time", stamp ? formatStamp(stamp) : "–");
    var title = stamp ? "exchange time (IST): " + stamp : "no exchange timestamp: Kite sends one in full mode only";
    if (time.title !== title) time.title = title;
    // When the tick was received: the browser's clock, unless the server says it is much older
    // (a snapshot of the latest stored tick).
    var seen = now;
    var received = tick.received_at ? Date.parse(tick.received_at) : NaN;
    if (!isNaN(received) && now - received > CLOCK_TOLERANCE_MS) seen = received;
    row.dataset.seen = String(seen);
    markStale(row, now);
    var points = history[token] || (history[token] = []);
    points.push(Number(tick.last_price));
    if (points.length > SPARK_POINTS) points.shift();
    draw(row.querySelector("canvas.spark"), points);
  }

  function applyRemoved(tokens) {
    var now = Date.now();
    tokens.forEach(function (token) {
      removedAt[token] = now;
      var row = document.getElementById("row-" + token);
      if (!row) return;
      row.classList.add("not-streaming");
      row.classList.remove("stale", "market-closed");
      depthChanged = true;
      setBadge(row, "not streaming", "The feed no longer streams this instrument (deactivated or delisted): " +
        "the price shown is its last.");
    });
    updateDepthColumns();
  }

  // No tick while the exchange trades is an alarm ("stale"); outside its hours it is not.
  function markStale(row, now) {
    if (row.dataset.token === undefined || row.classList.contains("not-streaming")) return;
    var state = marketFor(row.cells[1] ? row.cells[1].textContent : "NSE", now);
    var open = state ? state.open : marketOpen(now);
    var seen = row.dataset.seen;
    var age = seen === undefined ? Infinity : (now - Number(seen)) / 1000;
    var stale = open && seen !== undefined && age > STALE_SECONDS;
    var closed = !open && state !== null && age > STALE_SECONDS;
    row.classList.toggle("stale", stale);
    row.classList.toggle("market-closed", closed);
    if (stale) setBadge(row, "stale", "no tick for " + Math.round(age) + " s during market hours");
    else if (closed) setBadge(row, "market closed", state.why);
    else setBadge(row, "", "");
  }

  function markAllStale() {
    var now = Date.now();
    for (var i = 0; i < body.rows.length; i++) markStale(body.rows[i], now);
    renderMarket(now);
  }

  // Bid/Ask only while a visible, streaming instrument sends depth (full mode).
  function updateDepthColumns() {
    if (!depthChanged) return;
    depthChanged = false;
    var shown = false;
    for (var i = 0; i < body.rows.length && !shown; i++) {
      var row = body.rows[i];
      shown = !row.hidden && row.dataset.depth === "1" && !row.classList.contains("not-streaming");
    }
    if (table.classList.contains("no-depth") === !shown) return;
    table.classList.toggle("no-depth", !shown);
    depthNote.hidden = shown;
  }

  // --- status, filter, connection ------------------------------------------------------------

  function applyStatus(status) {
    if (status.market) applyMarket(status.market);
    var feed = document.getElementById("feed-state");
    feed.textContent = "feed: " + status.state + (status.feed === "simulator" ? " (simulator)" : "");
    feed.className = "pill " + (status.state === "connected" ? "pill-ok" : status.state === "idle" ? "pill-wait" : "pill-bad");
    document.getElementById("feed-rate").textContent = status.ticks_per_second;
    document.getElementById("feed-age").textContent = status.last_tick_age === null ? "–" : status.last_tick_age + "s";
    document.getElementById("feed-subscribed").textContent = status.subscribed;
    document.getElementById("feed-capacity").textContent = status.capacity;
    document.getElementById("feed-reconnects").textContent = status.reconnects;
    var warning = document.getElementById("feed-warning");
    var text = status.over_limit ? status.over_limit + " active instruments exceed the feed's limit and are not streaming" : (status.error || "");
    warning.hidden = !text;
    warning.textContent = text;
  }

  function applyFilter(row) {
    var term = filterBox.value.trim().toLowerCase();
    var rows = row ? [row] : body.rows;
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].dataset.search === undefined) continue;
      rows[i].hidden = term !== "" && rows[i].dataset.search.indexOf(term) === -1;
    }
    depthChanged = true;
    if (!row) updateDepthColumns();
  }

  // The orders/positions panel (oms.js) marks positions with the same ticks.
  function announce(name, detail) {
    document.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  function connect() {
    clearTimeout(retryTimer);
    setState("connecting", retry ? "reconnecting…" : "connecting…");
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/ticks/");
    socket.onopen = function () { retry = 0; setState("live", "live"); };
    socket.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "ticks") {
        message.ticks.forEach(applyTick);
        updateDepthColumns();
        announce("portal:ticks", message.ticks);
      } else if (message.type === "removed") {
        applyRemoved(message.tokens || []);
        announce("portal:removed", message.tokens || []);
      } else if (message.type === "status") {
        applyStatus(message.status);
      } else if (message.type === "oms") {
        announce("portal:oms", null);  // an order or position changed: the panel re-reads now
      }
    };
    socket.onclose = function () {
      // The feed's heartbeat arrives on this socket: without it, its last state is not news.
      var feed = document.getElementById("feed-state");
      feed.textContent = "feed: unknown (no connection)";
      feed.className = "pill pill-wait";
      var delay = Math.min(10, Math.pow(2, retry)) * 1000;
      retry += 1;
      setState("reconnecting", "disconnected, retrying in " + Math.round(delay / 1000) + "s");
      retryTimer = setTimeout(connect, delay);
    };
  }

  var marketLine = document.getElementById("market-state");
  if (marketLine && marketLine.dataset.market) {
    try { applyMarket(JSON.parse(marketLine.dataset.market)); } catch (e) { market = null; }
  }
  filterBox.addEventListener("input", function () { applyFilter(); });
  setInterval(markAllStale, 1000);
  connect();
})();
