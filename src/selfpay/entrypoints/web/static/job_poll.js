// Polls a background job's JSON until it is no longer running, calling render(job) with
// each answer: gently slower while it runs, patient when the network is away. Shared by
// the QR batch page (job.js) and the import page (import_job.js).
(function () {
  "use strict";
  window.selfpayPollJob = function (url, render) {
    var delay = 400;
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (job) {
          render(job);
          if (job.state === "running") {
            delay = Math.min(delay * 1.3, 2000);
            setTimeout(poll, delay);
          }
        })
        .catch(function () { setTimeout(poll, 3000); });
    }
    poll();
  };
})();
