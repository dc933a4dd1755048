// A finding that changed arrives again over server-sent events: the new row replaces the
// old one (htmx's "afterbegin" swap alone would leave both).
document.addEventListener("htmx:sseBeforeMessage", function (evt) {
  var m = /id="([^"]+)"/.exec((evt.detail && evt.detail.data) || "");
  if (m) {
    var old = document.getElementById(m[1]);
    if (old) { old.remove(); }
  }
  var empty = document.querySelector("p.empty");
  if (empty) { empty.remove(); }
});

// Charts: each <div class="chart" data-spec="ID"> renders the Vega-Lite spec in the JSON
// <script id="ID">; the interpreter (ast: true) keeps eval out, as the CSP demands.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("div.chart[data-spec]").forEach(function (el) {
    var spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
    vegaEmbed(el, spec, { ast: true, actions: false, renderer: "svg", defaultStyle: false, tooltip: false }).catch(function (e) {
      el.textContent = "chart unavailable: " + e;
    });
  });
});
