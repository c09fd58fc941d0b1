// Keystone's only script: small behaviours htmx does not cover.
// Live log panes: follow the output unless the user paused or scrolled up.
// While paused, new lines still arrive (nothing is lost); the button counts them.
(function () {
  function paneOf(el) { return el && el.closest ? el.closest("[data-log-pane]") : null; }
  function atBottom(log) { return log.scrollHeight - log.scrollTop - log.clientHeight < 8; }
  function setPaused(pane, paused) {
    pane.dataset.paused = paused ? "true" : "false";
    var btn = pane.querySelector("[data-log-pause]");
    var state = pane.querySelector("[data-log-state]");
    if (!paused) { pane.dataset.unseen = "0"; }
    if (btn) {
      btn.textContent = paused ? "Follow" : "Pause";
      btn.setAttribute("aria-pressed", paused ? "true" : "false");
    }
    if (state) { state.textContent = paused ? "paused" : "following live output"; }
    if (!paused) {
      var log = pane.querySelector(".log");
      if (log) { log.scrollTop = log.scrollHeight; }
    }
  }
  document.addEventListener("htmx:sseMessage", function (evt) {
    var pane = paneOf(evt.target);
    if (!pane) return;
    var log = pane.querySelector(".log");
    if (!log) return;
    if (pane.dataset.paused === "true") {
      var n = (parseInt(pane.dataset.unseen || "0", 10) || 0) + 1;
      pane.dataset.unseen = String(n);
      var state = pane.querySelector("[data-log-state]");
      if (state) { state.textContent = "paused, " + n + " new line" + (n === 1 ? "" : "s"); }
    } else {
      log.scrollTop = log.scrollHeight;
    }
  });
  document.addEventListener("click", function (evt) {
    var btn = evt.target.closest("[data-log-pause]");
    if (!btn) return;
    var pane = paneOf(btn);
    if (pane) setPaused(pane, pane.dataset.paused !== "true");
  });
  // Scrolling up pauses following; scrolling back to the bottom resumes it.
  document.addEventListener("scroll", function (evt) {
    var log = evt.target;
    if (!log.classList || !log.classList.contains("log")) return;
    var pane = paneOf(log);
    if (!pane || !pane.querySelector("[data-log-pause]")) return;
    var paused = pane.dataset.paused === "true";
    if (!paused && !atBottom(log)) setPaused(pane, true);
    else if (paused && atBottom(log)) setPaused(pane, false);
  }, true);
})();

// Confirmations and select-on-click, in place of inline handlers (the CSP allows no
// inline script): <form data-confirm="..."> or <button data-confirm="...">, and
// <textarea data-select-on-click>.
(function () {
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    var submitter = evt.submitter;
    var text = (submitter && submitter.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { evt.preventDefault(); evt.stopImmediatePropagation(); }
  }, true);
  document.addEventListener("click", function (evt) {
    var el = evt.target.closest ? evt.target.closest("[data-select-on-click]") : null;
    if (el && el.select) el.select();
  });
})();

// Live container logs (app.logtail): a text filter over the pane's lines, applied to lines
// as they arrive too. <input data-log-filter> inside a [data-log-pane].
(function () {
  function apply(pane) {
    var input = pane.querySelector("[data-log-filter]");
    if (!input) return;
    var needle = input.value.trim().toLowerCase();
    pane.querySelectorAll(".log .ln").forEach(function (ln) {
      ln.hidden = needle !== "" && ln.textContent.toLowerCase().indexOf(needle) < 0;
    });
  }
  document.addEventListener("input", function (evt) {
    if (!evt.target.matches || !evt.target.matches("[data-log-filter]")) return;
    var pane = evt.target.closest("[data-log-pane]");
    if (pane) apply(pane);
  });
  document.addEventListener("htmx:afterSettle", function (evt) {
    var pane = evt.target && evt.target.closest ? evt.target.closest("[data-log-pane]") : null;
    if (pane && pane.querySelector("[data-log-filter]")) apply(pane);
  });
})();

// Per-server columns (operations/_panel.html): a parent whose children ran per server shows
// one column per server. Each line of the live log (#op-log, one SSE stream for the whole
// tree) is copied into the column of the operation that wrote it (its data-op is in the
// column's data-ops). The panel is re-rendered on step events: the columns are then
// refilled from #op-log, which holds every line since the start.
(function () {
  function targets() {
    var map = {};
    document.querySelectorAll("[data-server-column]").forEach(function (col) {
      var log = col.querySelector("[data-server-log]");
      (col.getAttribute("data-ops") || "").split(" ").forEach(function (id) {
        if (id && log) map[id] = log;
      });
    });
    return map;
  }
  function place(line, map) {
    if (!line.getAttribute) return;
    var target = map[line.getAttribute("data-op") || ""];
    if (!target) return;
    var follow = target.scrollHeight - target.scrollTop - target.clientHeight < 8;
    target.appendChild(line.cloneNode(true));
    if (follow) target.scrollTop = target.scrollHeight;
  }
  function refill() {
    var log = document.getElementById("op-log");
    if (!log || !log.children.length) return;  // nothing yet: keep what the server rendered
    var map = targets();
    var logs = document.querySelectorAll("[data-server-log]");
    if (!logs.length) return;
    logs.forEach(function (l) { l.textContent = ""; });
    Array.prototype.forEach.call(log.children, function (ln) { place(ln, map); });
    logs.forEach(function (l) { l.scrollTop = l.scrollHeight; });
  }
  function start() {
    var log = document.getElementById("op-log");
    if (!log) return;
    refill();
    new MutationObserver(function (records) {
      var map = targets();
      records.forEach(function (r) {
        Array.prototype.forEach.call(r.addedNodes, function (n) { place(n, map); });
      });
    }).observe(log, { childList: true });
  }
  document.addEventListener("htmx:afterSwap", function (evt) {
    if (evt.target && evt.target.id === "op-panel") refill();
  });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

// A page that is leaving does not reload itself. The wizard polls /onboarding/watch and
// reloads (HX-Refresh) when what it shows has changed; a click on its Deploy button posts a
// form, and the deploy that POST creates is such a change. A reload while the POST's answer
// is on its way cancels that navigation: the person stays on the wizard instead of the live
// log. So once a form is really submitted (not one htmx handles) or the page starts to
// unload, no poll starts and no HX-Refresh is acted on for 15 s (a navigation that ends in
// a download or a 204 leaves the page where it is: it then goes on as before).
(function () {
  var since = 0;
  function leaving() { return since && Date.now() - since < 15000; }
  document.addEventListener("submit", function (evt) {
    if (!evt.defaultPrevented) since = Date.now();
  });
  window.addEventListener("beforeunload", function () { since = Date.now(); });
  window.addEventListener("pageshow", function () { since = 0; });
  document.addEventListener("htmx:beforeRequest", function (evt) {
    if (leaving()) evt.preventDefault();
  });
  document.addEventListener("htmx:beforeOnLoad", function (evt) {
    var xhr = evt.detail && evt.detail.xhr;
    if (leaving() && xhr && xhr.getResponseHeader("HX-Refresh") === "true") evt.preventDefault();
  });
})();
