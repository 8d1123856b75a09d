/* The devices console (templates/admin/devices.html, enrol_code.html); no inline script
   (the CSP allows only files like this one).
   - #fleet-live[data-live-url]: refetch the live part every data-every seconds while the
     tab is visible (the server renders it: admin/_fleet.html), and say when.
   - [data-replace-url]: the enrolment code page replaces its history entry with the
     device's page, so that a reload or Back shows the device, never the code again.
   - .copy-btn[data-copy]: copy the code or the command line. */
(function () {
  "use strict";

  function stamp() {
    var now = new Date();
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(now.getHours()) + ":" + two(now.getMinutes()) + ":" + two(now.getSeconds());
  }

  function startLive(box) {
    var url = box.getAttribute("data-live-url");
    var every = Math.max(5, parseInt(box.getAttribute("data-every"), 10) || 15) * 1000;
    var updated = document.getElementById("fleet-updated");
    var stopped = false;

    function refresh() {
      if (stopped || document.hidden) { return; }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          if (r.status === 401 || r.status === 403) { stopped = true; }
          return r.ok ? r.json() : null;
        })
        .then(function (doc) {
          if (!doc || typeof doc.html !== "string") { return; }
          box.innerHTML = doc.html;
          if (updated) { updated.textContent = "· " + stamp(); }
        })
        .catch(function () { /* the next round tries again */ });
    }

    setInterval(refresh, every);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { refresh(); }
    });
  }

  function copy(button) {
    var text = button.getAttribute("data-copy") || "";
    var done = function () {
      var label = button.textContent;
      button.textContent = button.getAttribute("data-copied") || "✓";
      button.classList.add("copied");
      setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 1800);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallback(text); done(); });
    } else {
      fallback(text);
      done();
    }
  }

  function fallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* the text stays selectable */ }
    document.body.removeChild(area);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("fleet-live");
    if (live && live.getAttribute("data-live-url")) { startLive(live); }
    var once = document.querySelector("[data-replace-url]");
    if (once && window.history && window.history.replaceState) {
      window.history.replaceState(null, "", once.getAttribute("data-replace-url"));
    }
    Array.prototype.forEach.call(document.querySelectorAll(".copy-btn[data-copy]"), function (b) {
      b.addEventListener("click", function () { copy(b); });
    });
  });
})();
