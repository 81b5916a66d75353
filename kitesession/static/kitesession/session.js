// The dashboard's Kite session pill: refreshed from /kite/status/ every 15 seconds, so a
// morning rollover shows "Kite login needed" (and the link) without a reload.
(function () {
  "use strict";
  var pill = document.getElementById("kite-session");
  if (!pill) return;
  var link = document.getElementById("kite-login");
  var REFRESH_MS = 15000;

  function until(iso) {
    // "2026-12-02T06:00:00+05:30" -> "02 Dec 06:00 IST" (the server writes IST)
    var months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    var m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(iso || "");
    return m ? m[3] + " " + months[parseInt(m[2], 10) - 1] + " " + m[4] + ":" + m[5] + " IST" : "";
  }

  function apply(body) {
    var text = body.state === "valid" ? "Kite: " + body.user_id + " until " + until(body.expires_at)
      : body.state === "bootstrap" ? "Kite: bootstrap token"
      : body.state === "not_configured" ? "Kite: not configured" : "Kite login needed";
    pill.textContent = text;
    pill.title = body.detail;
    pill.className = "pill " + (body.state === "valid" ? "pill-ok" : body.state === "login_needed" ? "pill-bad" : "pill-wait");
    if (link) link.hidden = !body.login_url || body.state === "valid";
  }

  function refresh() {
    fetch(pill.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) { if (body) apply(body); })
      .catch(function () { /* the next refresh tries again */ });
  }

  setInterval(refresh, REFRESH_MS);
})();
