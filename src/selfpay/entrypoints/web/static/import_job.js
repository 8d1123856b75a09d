// Polls an import job: shows its progress, then opens its import run (or its failure).
(function () {
  "use strict";
  var box = document.getElementById("import-job");
  if (!box) return;
  var url = box.getAttribute("data-url");

  function render(job) {
    box.setAttribute("data-state", job.state);
    if (job.state === "done" && job.run_url) {
      window.location.replace(job.run_url);
      return;
    }
    var bar = document.getElementById("import-bar");
    bar.style.width = (job.total ? Math.round((100 * job.done) / job.total) : 0) + "%";
    bar.parentNode.setAttribute("aria-valuenow", String(job.done));
    document.getElementById("import-progress").textContent = job.progress;
    if (job.state === "failed") {
      document.getElementById("import-message").textContent = job.message;
      document.getElementById("import-running").hidden = true;
      document.getElementById("import-failed").hidden = false;
    }
  }

  if (box.getAttribute("data-state") === "running") window.selfpayPollJob(url, render);
})();
