// Polls a QR batch job and updates its progress page. Plain JS, no build step.
(function () {
  "use strict";
  var box = document.getElementById("job");
  if (!box) return;
  var url = box.getAttribute("data-url");
  var words = JSON.parse(document.getElementById("job-i18n").textContent);
  var bar = document.getElementById("job-bar");

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function fillRows(sectionId, rows) {
    var section = document.getElementById(sectionId);
    var body = section.querySelector("tbody");
    body.textContent = "";
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", r.row ? String(r.row) : "\u2014", "num"));
      tr.appendChild(el("td", r.message));
      body.appendChild(tr);
    });
    section.hidden = rows.length === 0;
  }

  function render(job) {
    var pct = job.total ? Math.round((100 * job.done) / job.total) : (job.state === "done" ? 100 : 0);
    bar.style.width = pct + "%";
    bar.parentNode.setAttribute("aria-valuenow", String(job.done));
    var state = document.getElementById("job-state");
    state.textContent = words[job.state] || job.state;
    state.className = "state state-" + job.state;
    box.setAttribute("data-state", job.state);
    var count = document.getElementById("job-count");
    count.textContent = job.state === "failed" ? "" : job.done + " / " + (job.total || "\u2026");
    var warnings = document.getElementById("job-warning-list");
    warnings.textContent = "";
    (job.warnings || []).forEach(function (w) { warnings.appendChild(el("li", w)); });
    document.getElementById("job-warnings").hidden = !(job.warnings && job.warnings.length);
    if (job.state === "failed") {
      // Nothing was made: hide the bar and the count, show the state and the reason.
      document.getElementById("job-progress").hidden = true;
      count.hidden = true;
      document.getElementById("job-message").textContent = job.message;
      document.getElementById("job-failed").hidden = false;
      fillRows("job-errors", job.errors || []);
    }
    if (job.state === "done") {
      var summary = document.getElementById("job-summary");
      summary.textContent = job.summary;
      summary.className = "flash " + (job.skipped_rows ? "flash-warning" : "flash-success");
      document.getElementById("zip-link").setAttribute("href", job.download_url);
      var thumbs = document.getElementById("job-preview");
      thumbs.textContent = "";
      (job.preview || []).forEach(function (p) {
        var fig = el("figure");
        var img = el("img");
        img.src = "/admin/qr/preview.png?biller=" + encodeURIComponent(p.biller) +
          "&account=" + encodeURIComponent(p.account);
        img.alt = p.account; img.width = 140; img.height = 140;
        fig.appendChild(img);
        var cap = el("figcaption", p.biller + " \u00b7 ");
        cap.appendChild(el("span", p.account, "mono"));
        fig.appendChild(cap);
        thumbs.appendChild(fig);
      });
      document.getElementById("job-done").hidden = false;
      fillRows("job-skipped", job.skipped || []);
    }
  }

  if (box.getAttribute("data-state") === "running") window.selfpayPollJob(url, render);
})();
