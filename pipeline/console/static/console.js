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
