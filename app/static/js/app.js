// Keystone's only script: small behaviours htmx does not cover.
// Live log panes: follow the output unless the user paused or scrolled up.
document.addEventListener("htmx:sseMessage", function (evt) {
  var pane = evt.target.closest ? evt.target.closest("[data-log-pane]") : null;
  if (!pane) return;
  var log = pane.querySelector(".log");
  if (log && pane.dataset.paused !== "true") { log.scrollTop = log.scrollHeight; }
});
document.addEventListener("click", function (evt) {
  var btn = evt.target.closest("[data-log-pause]");
  if (!btn) return;
  var pane = btn.closest("[data-log-pane]");
  var paused = pane.dataset.paused === "true";
  pane.dataset.paused = paused ? "false" : "true";
  btn.textContent = paused ? "Pause" : "Follow";
  btn.setAttribute("aria-pressed", paused ? "false" : "true");
});
