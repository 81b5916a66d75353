// Live ticks on the dashboard: one websocket, rows updated in place, reconnect with backoff.
(function () {
  "use strict";
  var SPARK_POINTS = 60;
  var table = document.getElementById("ticks");
  var body = table.tBodies[0];
  var wsState = document.getElementById("ws-state");
  var filterBox = document.getElementById("filter");
  var history = {};
  var socket = null;
  var retry = 0;
  var retryTimer = null;

  function setState(state, text) {
    wsState.dataset.state = state;
    wsState.className = "pill " + (state === "live" ? "pill-ok" : state === "connecting" ? "pill-wait" : "pill-bad");
    wsState.textContent = text;
  }

  function rowFor(tick) {
    var row = document.getElementById("row-" + tick.instrument_token);
    if (row) return row;
    var empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    row = document.createElement("tr");
    row.id = "row-" + tick.instrument_token;
    row.dataset.token = tick.instrument_token;
    row.dataset.search = (tick.tradingsymbol + " " + tick.exchange).toLowerCase();
    var cells = '<td class="sym"></td><td></td>';
    ["last_price", "change", "change_percent", "volume", "oi", "bid", "ask"].forEach(function (f) {
      cells += '<td class="num' + (f === "last_price" ? " ltp" : "") + '" data-field="' + f + '">–</td>';
    });
    cells += '<td data-field="time">–</td><td><canvas class="spark" width="100" height="22"></canvas></td>';
    row.innerHTML = cells;
    row.cells[0].textContent = tick.tradingsymbol;
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

  function formatNumber(value) {
    return value === undefined || value === null ? undefined : Number(value).toLocaleString("en-IN");
  }

  function draw(canvas, points) {
    var ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (points.length < 2) return;
    var min = Math.min.apply(null, points), max = Math.max.apply(null, points);
    var span = max - min || 1;
    ctx.beginPath();
    points.forEach(function (p, i) {
      var x = (i / (SPARK_POINTS - 1)) * canvas.width;
      var y = canvas.height - 2 - ((p - min) / span) * (canvas.height - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = points[points.length - 1] >= points[0] ? "#3fb950" : "#f85149";
    ctx.lineWidth = 1.2;
    ctx.stroke();
  }

  function applyTick(tick) {
    var row = rowFor(tick);
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
    if (tick.bid !== undefined) setCell(row, "bid", tick.bid + " × " + tick.bid_quantity);
    if (tick.ask !== undefined) setCell(row, "ask", tick.ask + " × " + tick.ask_quantity);
    var stamp = tick.exchange_timestamp || tick.last_trade_time;
    setCell(row, "time", stamp ? stamp.substring(11, 19) : new Date().toTimeString().substring(0, 8));
    var points = history[tick.instrument_token] || (history[tick.instrument_token] = []);
    points.push(Number(tick.last_price));
    if (points.length > SPARK_POINTS) points.shift();
    draw(row.querySelector("canvas.spark"), points);
  }

  function applyStatus(status) {
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
  }

  function connect() {
    clearTimeout(retryTimer);
    setState("connecting", retry ? "reconnecting…" : "connecting…");
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/ticks/");
    socket.onopen = function () { retry = 0; setState("live", "live"); };
    socket.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "ticks") message.ticks.forEach(applyTick);
      else if (message.type === "status") applyStatus(message.status);
    };
    socket.onclose = function (event) {
      var delay = Math.min(10, Math.pow(2, retry)) * 1000;
      retry += 1;
      setState("reconnecting", "disconnected, retrying in " + Math.round(delay / 1000) + "s");
      retryTimer = setTimeout(connect, delay);
    };
  }

  filterBox.addEventListener("input", function () { applyFilter(); });
  connect();
})();
