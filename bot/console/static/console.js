// The console's only script of its own: one event stream per page (server-sent events from
// /events). Each `changed` (any commit) or `messages` (a new message) event fires the same
// event on <body>; fragments that must stay live say hx-trigger="changed from:body" (or
// "messages from:body") and fetch themselves again. No build step.
(function () {
  "use strict";
  var url = document.body.dataset.live;
  var state = document.getElementById("live-state");
  function show(text, name) {
    if (state) { state.textContent = text; state.dataset.state = name; }
  }
  if (!url) { show("", "off"); return; }
  var source = new EventSource(url);
  var names = ["changed", "messages"];
  function fire(name) { document.body.dispatchEvent(new CustomEvent(name)); }
  // (Re)connected: what changed while the stream was not open (since the page loaded, or
  // while it reconnected) is fetched once now.
  source.addEventListener("ready", function () {
    names.forEach(fire);
    show("live", "live");
  });
  names.forEach(function (name) {
    source.addEventListener(name, function () { fire(name); });
  });
  source.onerror = function () { show("reconnecting…", "reconnecting"); };
  window.addEventListener("beforeunload", function () { source.close(); });
})();
