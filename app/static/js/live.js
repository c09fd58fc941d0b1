// Live status: numbers that keep counting and a log pane that knows when its operation ended.
// - [data-elapsed="S"]: a running duration, S seconds when rendered; counts on each second.
// - [data-ago="S"]: "Ns ago" for something S seconds old when rendered; counts on.
// - When the operation's stream ends (or its refreshed panel shows a final status), the log
//   pane stops saying "following live output" and its Pause button goes.
(function () {
  var TERMINAL = { succeeded: 1, failed: 1, cancelled: 1, interrupted: 1 };

  function duration(s) {
    if (s < 60) return s.toFixed(1) + "s";
    return Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  }
  function ago(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    if (s < 86400) return Math.floor(s / 3600) + "h ago";
    return Math.floor(s / 86400) + "d ago";
  }
  function since(el, now) {
    if (!el.dataset.t0) el.dataset.t0 = String(now);
    return (now - Number(el.dataset.t0)) / 1000;
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-elapsed]").forEach(function (el) {
      el.textContent = duration((parseFloat(el.dataset.elapsed) || 0) + since(el, now));
    });
    document.querySelectorAll("[data-ago]").forEach(function (el) {
      el.textContent = ago((parseFloat(el.dataset.ago) || 0) + since(el, now));
    });
  }
  setInterval(tick, 1000);

  function ended(status) {
    document.querySelectorAll("[data-log-pane]").forEach(function (pane) {
      var btn = pane.querySelector("[data-log-pause]");
      if (btn) btn.remove();
      var state = pane.querySelector("[data-log-state]");
      if (state) state.textContent = "complete log" + (status ? " (" + status + ")" : "");
      pane.dataset.ended = "true";
    });
  }
  function panelStatus() {
    var badge = document.querySelector("#op-panel [data-op-status]");
    return badge ? badge.dataset.opStatus : null;
  }
  // The stream's last event is "end": the extension closes it with type "message".
  document.addEventListener("htmx:sseClose", function (evt) {
    if (evt.detail && evt.detail.type === "message") ended(panelStatus());
  });
  // The panel is re-fetched on step/status/end events: a final status there ends the pane too.
  document.addEventListener("htmx:afterSwap", function (evt) {
    if (!evt.target || evt.target.id !== "op-panel") return;
    var status = panelStatus();
    if (status && TERMINAL[status]) ended(status);
  });
})();
