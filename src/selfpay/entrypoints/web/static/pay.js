// Paying a bill: the account page (choose bills, create the order) and the order
// status page (poll the server until it says paid). Plain JS, no build step.
//
// One Idempotency-Key per intent (account + bill set + channel), kept in
// sessionStorage: a network cut followed by another tap resumes the same order on the
// server instead of creating a second one. The status page trusts only the server's
// GET /api/v1/orders/<no>, never a cashier's or WeChat's own "ok".
(function () {
  "use strict";

  var MAX_ATTEMPTS = 3;
  var inWeChat = /MicroMessenger/i.test(navigator.userAgent);

  function fmt(template, values) {
    return String(template).replace(/\{(\w+)\}/g, function (m, k) {
      return values[k] !== undefined ? String(values[k]) : m;
    });
  }

  function yuan(fen) {
    var sign = fen < 0 ? "-" : "";
    fen = Math.abs(fen);
    var whole = String(Math.floor(fen / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    var cents = String(fen % 100);
    return sign + "\u00a5" + whole + "." + (cents.length < 2 ? "0" + cents : cents);
  }

  function newKey() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  function store(key, value) {
    try {
      if (value === null) window.sessionStorage.removeItem(key);
      else window.sessionStorage.setItem(key, value);
    } catch (e) { /* private mode: the key then lives for this page only */ }
  }

  function load(key) {
    try { return window.sessionStorage.getItem(key); } catch (e) { return null; }
  }

  function showError(box, text) {
    if (!box) return;
    box.textContent = text || "";
    box.hidden = !text;
  }

  // POST JSON; resolves {ok, status, body} or rejects on a network failure.
  function postJson(url, body, headers) {
    var h = { "Content-Type": "application/json", "Accept": "application/json" };
    Object.keys(headers || {}).forEach(function (k) { h[k] = headers[k]; });
    return fetch(url, {
      method: "POST", headers: h, body: JSON.stringify(body || {}),
      credentials: "same-origin", cache: "no-store"
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        return { ok: r.ok, status: r.status, body: data };
      });
    });
  }

  // The server's words for the customer: `message` is in the page's language (`detail`
  // is English, for logs; FastAPI's own 422 carries a list of field errors there).
  function detail(body, fallback) {
    if (body && typeof body.message === "string" && body.message) return body.message;
    var d = body && body.detail;
    if (typeof d === "string") return d;
    if (d && d.length && d[0].msg) return d[0].msg;
    return fallback;
  }

  // What to do with an order the server answered: go where the channel needs us.
  function follow(view, t) {
    var action = view.action || {};
    var statusUrl = "/pay/" + encodeURIComponent(view.order_no);
    if (action.kind === "redirect" && action.url) {
      window.location.href = action.url;
    } else if (action.kind === "jsapi" && action.params) {
      var invoke = function () {
        window.WeixinJSBridge.invoke("getBrandWCPayRequest", action.params, function () {
          // Whatever WeChat says here, the status page asks the server.
          window.location.href = statusUrl;
        });
      };
      if (window.WeixinJSBridge) invoke();
      else document.addEventListener("WeixinJSBridgeReady", invoke, false);
    } else {
      window.location.href = statusUrl; // Native code_url: shown there as a QR code
    }
  }

  function chooseChannel(cfg) {
    var has = function (c) { return cfg.channels.indexOf(c) >= 0; };
    if (has("wechatpay")) {
      if (inWeChat && cfg.openid) return { channel: "wechatpay", mode: "jsapi" };
      if (inWeChat && cfg.oauth && !cfg.wx_failed) return { oauth: true };
      return { channel: "wechatpay", mode: "native" };
    }
    if (has("sandbox")) return { channel: "sandbox", mode: "cashier" };
    return { channel: cfg.channels[0], mode: "" };
  }

  // ---- the account page -------------------------------------------------------------
  function initAccount(form) {
    // Enter in a field must not submit the page: paying goes through the button
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    var cfg = JSON.parse(form.getAttribute("data-config"));
    var t = cfg.t;
    var boxes = Array.prototype.slice.call(form.querySelectorAll("input[name=bill]"));
    var total = document.getElementById("pub-total");
    var amount = document.getElementById("pay-amount");
    var chosen = document.getElementById("pub-chosen");
    var button = document.getElementById("pay-button");
    var errorBox = document.getElementById("pay-error");
    var busy = false;

    function picked() {
      return boxes.filter(function (b) { return b.checked; })
        .map(function (b) { return parseInt(b.value, 10); })
        .sort(function (a, b) { return a - b; });
    }

    function update() {
      var sum = 0;
      boxes.forEach(function (b) {
        if (b.checked) sum += parseInt(b.getAttribute("data-fen"), 10);
        b.closest("li").classList.toggle("off", !b.checked);
      });
      var n = picked().length;
      total.textContent = yuan(sum);
      if (amount) amount.textContent = yuan(sum);
      if (chosen) chosen.textContent = fmt(t["pay.chosen"], { n: n, total: boxes.length });
      if (button && cfg.channels.length) button.disabled = n === 0;
      showError(errorBox, "");
    }

    function pay(retried) {
      var ids = picked();
      if (!ids.length) { showError(errorBox, t["pay.choose_one"]); return; }
      var how = chooseChannel(cfg);
      if (how.oauth) {
        var back = cfg.here + "?pay=" + ids.join("-");
        window.location.href = cfg.oauth_start + encodeURIComponent(back);
        return;
      }
      var intent = ["selfpay:intent", cfg.biller, cfg.account, ids.join(","), how.channel,
                    how.mode].join("|");
      var key = load(intent);
      if (!key) { key = newKey(); store(intent, key); }
      busy = true;
      button.disabled = true;
      button.classList.add("busy");
      showError(errorBox, "");
      var body = { biller: cfg.biller, account: cfg.account, channel: how.channel,
                   bill_ids: ids, mode: how.mode };
      postJson(cfg.api, body, { "Idempotency-Key": key }).then(function (r) {
        if (r.ok) {
          var v = r.body;
          if ((v.status === "closed" || v.status === "failed") && !retried) {
            store(intent, null); // that order is over: this tap is a new intent
            busy = false;
            return pay(true);
          }
          follow(v, t);
          return;
        }
        if (r.status >= 400 && r.status < 500) store(intent, null);
        var code = r.body && r.body.code;
        if (code === "just_paid") { // an earlier order paid these bills a moment ago
          showError(errorBox, t["pay.error_just_paid"]);
          setTimeout(function () { window.location.reload(); }, 4000);
          return;
        }
        var fallback = r.status >= 500 ? t["pay.error_server"] : t["pay.error_nothing"];
        if (code === "previous_order_open") fallback = t["pay.error_previous_open"];
        showError(errorBox, r.status >= 500 ? fallback : detail(r.body, fallback));
        busy = false;
        button.classList.remove("busy");
        button.disabled = false;
      }, function () {
        // The request may or may not have arrived: keep the key, so another tap
        // resumes the same order.
        showError(errorBox, t["pay.error_network"]);
        busy = false;
        button.classList.remove("busy");
        button.disabled = false;
      });
    }

    boxes.forEach(function (b) { b.addEventListener("change", update); });
    if (button) button.addEventListener("click", function () { if (!busy) pay(false); });
    update();

    // Back from the WeChat OAuth step: restore the choice and pay.
    var m = /[?&]pay=([0-9-]+)/.exec(window.location.search);
    if (m && cfg.openid && inWeChat) {
      var want = m[1].split("-");
      boxes.forEach(function (b) { b.checked = want.indexOf(b.value) >= 0; });
      update();
      if (picked().length) pay(false);
    }
  }

  // ---- the status page --------------------------------------------------------------
  var FINAL = { done: true, failed: true, closed: true, disputed: true };

  function stateOf(v) {
    if (v.status === "posted") return "done";
    if (v.status === "paid") return "paid";
    if (v.status === "failed" || v.status === "closed" || v.status === "disputed") {
      return v.status;
    }
    var act = v.action || {};
    if (v.attempts_left < MAX_ATTEMPTS && !act.kind) return "retry";
    return "waiting";
  }

  function initStatus(root) {
    var cfg = JSON.parse(root.getAttribute("data-config"));
    var t = cfg.t;
    var el = function (id) { return document.getElementById(id); };
    var errorBox = el("pay-error");
    var state = cfg.state;
    var timer = null;
    var failures = 0;
    var qrUrl = null;

    function show(id, on) { var n = el(id); if (n) n.hidden = !on; }

    function render(v) {
      var s = stateOf(v);
      root.setAttribute("data-state", s);
      el("st-title").textContent = t["pay.st." + s];
      el("st-text").textContent = s === "retry"
        ? fmt(t["pay.text.retry"], { n: v.attempts_left }) : t["pay.text." + s];
      var act = v.action || {};
      show("st-qr", s === "waiting" && act.kind === "code_url");
      show("st-cashier", s === "waiting" && act.kind === "redirect");
      show("st-spinner", s === "waiting" || s === "paid");
      show("st-retry", s === "retry");
      if (s === "retry") el("st-retry-left").textContent = fmt(t["pay.retry_left"],
                                                             { n: v.attempts_left });
      show("st-receipt", s === "paid" || s === "done");
      show("st-back", s === "failed" || s === "closed" || s === "disputed");
      if (act.kind === "code_url" && qrUrl !== null && act.code_url !== qrUrl) {
        window.location.reload(); // a new Native code: the server draws it
      }
      if (act.kind === "code_url") qrUrl = act.code_url;
      state = s;
    }

    var version = typeof cfg.version === "number" ? cfg.version : null;

    function poll() {
      // A long poll: the server answers when the order moves past `version` (or after
      // wait_s), so the page asks once per change rather than once a second.
      var url = version === null ? cfg.api
        : cfg.api + "?since=" + version + "&wait_s=" + (cfg.wait_s || 25);
      fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store",
                   credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (v) {
          failures = 0;
          showError(errorBox, "");
          if (typeof v.version === "number") version = v.version;
          render(v);
          if (FINAL[state]) return;
          if (version === null) schedule();  // no version to wait on: ask again later
          else poll();  // at once: the server did the waiting
        })
        .catch(function () {
          failures += 1;
          if (failures > 2) showError(errorBox, t["pay.error_network"]);
          schedule();
        });
    }

    function schedule() {
      clearTimeout(timer);
      // Back off gently when the network is down; never stop while undecided.
      timer = setTimeout(poll, cfg.interval_ms * Math.min(1 + failures, 6));
    }

    var retry = el("retry-button");
    if (retry) retry.addEventListener("click", function () {
      retry.disabled = true;
      var how = chooseChannel({ channels: [cfg.channel], openid: cfg.openid, oauth: false,
                                wx_failed: true });
      postJson(cfg.api + "/retry", { mode: how.mode }, {}).then(function (r) {
        retry.disabled = false;
        if (r.ok) { follow(r.body, t); return; }
        // paid meanwhile (another tab, a late notification): show the paid page
        if (r.status === 409 && r.body && r.body.code === "already_paid") {
          location.reload(); return;
        }
        showError(errorBox, detail(r.body, t["pay.error_server"]));
      }, function () {
        retry.disabled = false;
        showError(errorBox, t["pay.error_network"]);
      });
    });

    if (!FINAL[state]) poll();
  }

  var form = document.getElementById("pay-form");
  if (form) initAccount(form);
  var status = document.getElementById("pay-status");
  if (status) initStatus(status);
})();
