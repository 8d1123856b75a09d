/* The kiosk screen (/kiosk/{device_id}): steps, on-screen keypads, the keyboard-wedge
   scanner, the order that follows the server's word, idle reset and reconnecting.

   - Every key a scanner types lands on the document (whatever has focus): fast keys are
     buffered and Enter hands the text over: a card's QR code (choose / identify steps,
     verified by the server) or a payment code (pay step, when the channel takes them).
   - The order's state is the server's: polled at /kiosk/{id}/api/orders/{no} (which also
     reports the outcome to the device once); payment codes and retries change it, then a
     poll decides what is shown.
   - The order number and its Idempotency-Key live in sessionStorage until the order
     ends: a network cut or a reload resumes the same order, never a second one.
   - Idle for idle_s: a countdown overlay; then everything entered is cleared from the
     page and from this script's state, and step 1 comes back. */
(function () {
  "use strict";
  var root = document.getElementById("kiosk");
  if (!root) { return; }
  var C = JSON.parse(root.getAttribute("data-config"));
  var T = C.t || {};
  var STORE = "selfpay.kiosk." + C.device;
  var SCAN_GAP_MS = 300;  // a scanner types a character every few ms; no one types on a kiosk
  var POLL_MS = 1500;
  var MAX_BACKOFF_MS = 10000;
  var byId = function (id) { return document.getElementById(id); };
  var billers = {};
  (C.billers || []).forEach(function (b) { billers[b.code] = b; });

  function t(key, values) {
    var text = T["kiosk.ui." + key] || key;
    Object.keys(values || {}).forEach(function (k) { text = text.split("{" + k + "}").join(values[k]); });
    return text;
  }
  function say(key) {
    if (window.KioskVoice && typeof window.KioskVoice.say === "function") {
      try { window.KioskVoice.say(key); } catch (e) { /* voice is a help, never a blocker */ }
    }
  }
  function yuan(fen) {  // integer fen -> "¥123.45" without floating point
    var n = Math.abs(fen);
    return (fen < 0 ? "-" : "") + "¥" + Math.floor(n / 100) + "." + String(n % 100).padStart(2, "0");
  }
  function withLang(url) { return url + (url.indexOf("?") < 0 ? "?" : "&") + "lang=" + C.lang; }

  // --- state --------------------------------------------------------------------------
  var state;
  function fresh() {
    return { step: "choose", biller: null, account: "", holder: "", bills: [], total: 0,
             plate: "", codeMode: false, order: null, key: "", history: [],
             elderly: !!C.elderly_default, receiptMode: "", paidSeen: false };
  }
  state = fresh();

  function save() {
    if (!state.order) { sessionStorage.removeItem(STORE); return; }
    sessionStorage.setItem(STORE, JSON.stringify({
      order_no: state.order.order_no, key: state.key, biller: state.biller && state.biller.code,
      account: state.account, amount: state.order.amount_fen, elderly: state.elderly }));
  }
  function saveIntent() {  // before the order exists: the key of this intent
    sessionStorage.setItem(STORE, JSON.stringify({
      order_no: "", key: state.key, biller: state.biller.code, account: state.account,
      amount: state.total, elderly: state.elderly }));
  }

  // --- network ------------------------------------------------------------------------
  function call(method, url, body, headers) {
    var opts = { method: method, credentials: "same-origin",
                 headers: Object.assign({ "Accept": "application/json" }, headers || {}) };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(withLang(url), opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        return { ok: r.ok, status: r.status, data: data };
      });
    });
  }
  var netDown = false;
  function showNet(down) {
    if (down === netDown) { return; }
    netDown = down;
    byId("net-banner").hidden = !down;
    root.classList.toggle("offline", down);
    if (down) { say("reconnecting"); }
  }
  function problem(res) {
    return (res.data && (res.data.message || res.data.detail)) || t("error_server");
  }

  // --- steps --------------------------------------------------------------------------
  function stepsOf() {
    return state.biller ? state.biller.steps : ["choose", "identify", "confirm", "pay", "receipt"];
  }
  function has(step) { return stepsOf().indexOf(step) >= 0; }
  function after(step) {
    var order = ["choose", "identify", "identify_plate", "confirm_plate", "confirm", "pay", "receipt"];
    var steps = stepsOf();
    for (var i = order.indexOf(step) + 1; i < order.length; i++) {
      if (steps.indexOf(order[i]) >= 0) { return order[i]; }
    }
    return "";
  }
  function go(step, noHistory) {
    if (!noHistory && state.step !== step && state.step !== "pay") { state.history.push(state.step); }
    state.step = step;
    root.setAttribute("data-step", step);
    document.querySelectorAll(".step").forEach(function (s) {
      s.hidden = s.getAttribute("data-step") !== step;
    });
    byId("back-button").hidden = step === "choose" || step === "pay" || step === "receipt";
    byId("home-button").hidden = step === "choose";
    renderProgress();
    say(step);
    touch();
  }
  function renderProgress() {
    var list = byId("progress");
    list.textContent = "";
    if (state.step === "choose") { return; }
    stepsOf().forEach(function (s) {
      var li = document.createElement("li");
      li.className = s === state.step ? "current" : "";
      li.textContent = t("step_" + s);
      list.appendChild(li);
    });
  }
  function setBiller(card) {
    state.biller = billers[card.code] || card;
    document.querySelectorAll(".biller-name").forEach(function (el) { el.textContent = state.biller.name; });
    var pad = document.querySelector("#step-identify .keypad");
    pad.classList.toggle("has-letters", !!state.biller.letters);
    pad.setAttribute("data-page", "digits");
  }

  // --- elderly mode -------------------------------------------------------------------
  function applyElderly() {
    document.body.classList.toggle("elderly", state.elderly);
    if (window.KioskVoice && typeof window.KioskVoice.setElderly === "function") {
      window.KioskVoice.setElderly(state.elderly);  // speaks in elderly mode (SELFPAY_VOICE)
    }
    byId("elderly-button").setAttribute("aria-pressed", state.elderly ? "true" : "false");
    var shown = 0;
    document.querySelectorAll("#tiles .tile").forEach(function (tile) {
      var hide = state.elderly && tile.getAttribute("data-elderly") !== "1";
      tile.hidden = hide;
      if (!hide) { shown += 1; }
    });
    byId("no-billers").hidden = shown > 0;
    if (state.elderly) { tab("account"); }
  }

  // --- keypads ------------------------------------------------------------------------
  var LIMITS = { "account-input": 32, "phone-input": 11, "code-input": 6, "plate-input": 8,
                 "receipt-to": 120 };
  function fieldFor(pad) {
    var field = pad.getAttribute("data-field");
    if (field === "phone-input" && state.codeMode) { return "code-input"; }
    return field;
  }
  function press(fieldId, key) {
    var input = byId(fieldId);
    var value = input.value;
    if (key === "back") { value = value.slice(0, -1); }
    else if (key === "clear") { value = ""; }
    else if (value.length < (LIMITS[fieldId] || 32)) {
      if (fieldId === "receipt-to" && state.receiptMode === "email") { key = key.toLowerCase(); }
      if ((fieldId === "phone-input" || fieldId === "code-input") && !/^[0-9]$/.test(key)) { return; }
      value += key;
    }
    input.value = value;
    if (fieldId === "plate-input") { renderPlate(); }
    if (fieldId === "account-input") { byId("account-error").textContent = ""; }
  }
  root.addEventListener("click", function (e) {
    var target = e.target.closest ? e.target.closest("[data-key]") : null;
    if (!target) { return; }
    var key = target.getAttribute("data-key");
    var pad = target.closest(".keypad");
    if (key === "toggle" && pad) {
      pad.setAttribute("data-page", pad.getAttribute("data-page") === "letters" ? "digits" : "letters");
      return;
    }
    if (target.closest(".provinces")) { press("plate-input", key); return; }
    if (pad) { press(fieldFor(pad), key); }
  });

  // --- step 1: choose ------------------------------------------------------------------
  document.querySelectorAll("#tiles .tile").forEach(function (tile) {
    tile.addEventListener("click", function () {
      setBiller(billers[tile.getAttribute("data-biller")]);
      go(has("identify_plate") ? "identify_plate" : "identify");
    });
  });
  byId("elderly-button").addEventListener("click", function () {
    state.elderly = !state.elderly;
    applyElderly();
  });

  // --- step 2: identify ---------------------------------------------------------------
  function tab(name) {
    document.querySelectorAll("#step-identify .tab").forEach(function (b) {
      b.classList.toggle("active", b.getAttribute("data-tab") === name);
    });
    document.querySelectorAll("#step-identify .panel").forEach(function (p) {
      p.hidden = p.getAttribute("data-panel") !== name;
    });
  }
  document.querySelectorAll("#step-identify .tab").forEach(function (b) {
    b.addEventListener("click", function () { tab(b.getAttribute("data-tab")); });
  });
  byId("account-go").addEventListener("click", function () {
    var number = byId("account-input").value;
    if (!number) { byId("account-error").textContent = t("account_empty"); return; }
    state.account = number;
    loadAccount(byId("account-error"));
  });
  function loadAccount(errorEl) {
    var b = state.biller;
    return call("GET", "/api/v1/billers/" + encodeURIComponent(b.code) + "/accounts/" +
                encodeURIComponent(state.account)).then(function (res) {
      showNet(false);
      if (!res.ok) { errorEl.textContent = problem(res); say("failed"); return; }
      state.account = res.data.account;
      state.holder = res.data.holder;
      state.bills = res.data.open_bills || [];
      state.total = res.data.total_due_fen || 0;
      renderConfirm();
      go(has("confirm") || state.total === 0 ? "confirm" : "pay");
      if (state.step === "pay") { startOrder(); }
    }, function () { showNet(true); errorEl.textContent = t("error_network"); });
  }

  byId("sms-send").addEventListener("click", function () {
    var phone = byId("phone-input").value;
    byId("phone-error").textContent = "";
    call("POST", C.api + "/sms/send", { phone: phone }).then(function (res) {
      if (!res.ok) { byId("phone-error").textContent = problem(res); return; }
      byId("phone-note").textContent = res.data.message || "";
      byId("code-row").hidden = false;
      byId("sms-verify").disabled = false;
      state.codeMode = true;
    }, function () { showNet(true); byId("phone-error").textContent = t("error_network"); });
  });
  byId("sms-verify").addEventListener("click", function () {
    byId("phone-error").textContent = "";
    call("POST", C.api + "/sms/verify", { phone: byId("phone-input").value,
                                          code: byId("code-input").value }).then(function (res) {
      if (!res.ok) { byId("phone-error").textContent = problem(res); return; }
      var list = byId("account-list");
      list.textContent = "";
      (res.data.accounts || []).forEach(function (a) {
        var li = document.createElement("li");
        var btn = document.createElement("button");
        btn.type = "button";
        btn.className = "account-item";
        var name = document.createElement("strong");
        name.textContent = a.card.name + " · " + a.masked_name;
        var num = document.createElement("span");
        num.className = "mono";
        num.textContent = a.account;
        btn.appendChild(name);
        btn.appendChild(num);
        btn.addEventListener("click", function () {
          setBiller(a.card);
          state.account = a.account;
          loadAccount(byId("phone-error"));
        });
        li.appendChild(btn);
        list.appendChild(li);
      });
      if (!res.data.accounts || !res.data.accounts.length) {
        var none = document.createElement("li");
        none.className = "empty";
        none.textContent = t("no_accounts");
        list.appendChild(none);
      }
      byId("phone-accounts").hidden = false;
    }, function () { showNet(true); byId("phone-error").textContent = t("error_network"); });
  });

  // --- step 2': licence plate -----------------------------------------------------------
  function renderPlate() {
    var value = byId("plate-input").value;
    document.querySelectorAll("#plate-boxes .plate-box").forEach(function (box, i) {
      box.textContent = value.charAt(i) || "";
      box.classList.toggle("filled", i < value.length);
      box.classList.toggle("cursor", i === value.length);
    });
    byId("plate-boxes").classList.toggle("new-energy", value.length === 8);
    byId("provinces").hidden = value.length > 0;
    byId("plate-keys").hidden = value.length === 0;
    var pad = document.querySelector("#plate-keys .keypad");
    if (value.length === 1) { pad.setAttribute("data-page", "letters"); }
    if (value.length === 2) { pad.setAttribute("data-page", "digits"); }
    byId("plate-error").textContent = "";
  }
  byId("plate-go").addEventListener("click", function () {
    call("POST", C.api + "/plate", { biller: state.biller.code, plate: byId("plate-input").value })
      .then(function (res) {
        if (!res.ok) { byId("plate-error").textContent = problem(res); return; }
        state.plate = byId("plate-input").value;
        state.account = res.data.account;
        byId("plate-big").textContent = state.plate.charAt(0) + state.plate.charAt(1) + " · " + state.plate.slice(2);
        byId("plate-big").classList.toggle("new-energy", state.plate.length === 8);
        if (has("confirm_plate")) { go("confirm_plate"); } else { loadAccount(byId("plate-error")); }
      }, function () { showNet(true); byId("plate-error").textContent = t("error_network"); });
  });
  byId("plate-edit").addEventListener("click", function () { back(); });
  byId("plate-ok").addEventListener("click", function () { loadAccount(byId("plate-error")); });

  // --- step 3: confirm ----------------------------------------------------------------
  function renderConfirm() {
    byId("confirm-account").textContent = state.plate ? state.plate + " (" + state.account + ")" : state.account;
    byId("confirm-holder").textContent = state.holder || "—";
    var list = byId("confirm-bills");
    list.textContent = "";
    state.bills.forEach(function (bill) {
      var li = document.createElement("li");
      var period = document.createElement("span");
      period.textContent = bill.period;
      var amount = document.createElement("strong");
      amount.textContent = yuan(bill.amount_fen);
      li.appendChild(period);
      li.appendChild(amount);
      list.appendChild(li);
    });
    byId("confirm-total").textContent = yuan(state.total);
    var nothing = state.total <= 0;
    byId("confirm-nothing").hidden = !nothing;
    byId("confirm-total-row").hidden = nothing;
    byId("confirm-pay").hidden = nothing;
  }
  byId("confirm-pay").addEventListener("click", function () { go("pay"); startOrder(); });

  // --- step 4: pay --------------------------------------------------------------------
  var pollTimer = null;
  var backoff = POLL_MS;
  function newKey() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function startOrder() {
    if (state.order) { poll(); return; }
    if (!state.key) { state.key = newKey(); }
    saveIntent();
    byId("pay-amount").textContent = yuan(state.total);
    setPayState("waiting", t("st_creating"));
    call("POST", C.api + "/orders", { biller: state.biller.code, account: state.account },
         { "Idempotency-Key": state.key }).then(function (res) {
      showNet(false);
      backoff = POLL_MS;
      if (!res.ok) {
        if (res.data && res.data.retryable) { retryLater(startOrder); return; }
        setPayState("failed", problem(res));
        endOrder();
        return;
      }
      show(res.data);
    }, function () { showNet(true); retryLater(startOrder); });
  }
  function retryLater(fn) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(fn, backoff);
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  }
  function poll() {
    clearTimeout(pollTimer);
    if (!state.order) { return; }
    var no = state.order.order_no;
    call("GET", C.api + "/orders/" + no).then(function (res) {
      if (!state.order || state.order.order_no !== no) { return; }
      showNet(false);
      backoff = POLL_MS;
      if (!res.ok) {
        if (res.status >= 500) { retryLater(poll); return; }
        setPayState("failed", problem(res));
        endOrder();
        return;
      }
      show(res.data);
    }, function () { showNet(true); retryLater(poll); });
  }
  function show(order) {  // the order as the server has it (only from our own poll)
    state.order = order;
    save();
    byId("pay-order-no").textContent = order.order_no;
    byId("pay-amount").textContent = yuan(order.amount_fen);
    byId("pay-code-card").hidden = !order.takes_code;
    var img = byId("pay-qr");
    if (order.status === "paid" || order.status === "posted") {
      paid(order);
      return;
    }
    if (order.status === "failed" || order.status === "closed" || order.status === "disputed") {
      img.hidden = true;
      setPayState("failed", t("st_" + order.status));
      say("failed");
      endOrder();
      return;
    }
    if (order.qr) {
      var src = order.qr + "?a=" + order.attempts_left;
      if (img.getAttribute("src") !== src) { img.setAttribute("src", src); }
      img.hidden = false;
    }
    var retry = !(order.action && order.action.kind) && order.attempts_left > 0;
    byId("pay-retry").hidden = !retry;
    if (retry) {
      img.hidden = true;
      setPayState("retry", t("st_retry", { n: order.attempts_left }));
    } else {
      setPayState("waiting", order.action && order.action.kind ? t("st_waiting") : t("st_confirm_phone"));
    }
    pollTimer = setTimeout(poll, POLL_MS);
  }
  function setPayState(name, text) {
    byId("pay-status").setAttribute("data-state", name);
    byId("pay-status-text").textContent = text;
    if (name !== "retry") { byId("pay-retry").hidden = true; }
  }
  function endOrder() {  // the order is over: forget it and its key
    clearTimeout(pollTimer);
    state.order = null;
    state.key = "";
    sessionStorage.removeItem(STORE);
  }
  function paid(order) {
    clearTimeout(pollTimer);
    state.paidOrder = order;
    state.order = null;
    state.key = "";
    sessionStorage.removeItem(STORE);
    say("paid");
    byId("receipt-amount").textContent = yuan(order.amount_fen);
    if (has("receipt")) {
      go("receipt", true);
    } else {
      go("receipt", true);
      byId("receipt-lead").hidden = true;
      document.querySelector(".receipt-options").hidden = true;
    }
  }
  byId("pay-retry").addEventListener("click", function () {
    if (!state.order) { return; }
    byId("pay-error").textContent = "";
    call("POST", "/api/v1/orders/" + state.order.order_no + "/retry", { mode: "native" })
      .then(function (res) {
        if (!res.ok) { byId("pay-error").textContent = problem(res); }
        poll();
      }, function () { showNet(true); retryLater(poll); });
  });
  function payWithCode(code) {
    if (!state.order || !C.takes_code) { return; }
    byId("pay-error").textContent = "";
    setPayState("waiting", t("st_charging"));
    call("POST", "/api/v1/orders/" + state.order.order_no + "/payment-code", { auth_code: code })
      .then(function (res) {
        if (!res.ok) { byId("pay-error").textContent = problem(res); }
        else if (res.data.status === "pending" && !(res.data.action && res.data.action.kind)
                 && res.data.attempts_left >= 0 && res.data.status !== "paid") {
          byId("pay-error").textContent = res.data.attempts_left > 0 ? t("code_declined") : "";
        }
        poll();
      }, function () { showNet(true); retryLater(poll); });
  }

  // --- step 5: receipt ----------------------------------------------------------------
  function receiptNote(text, isError) {
    byId("receipt-note").textContent = isError ? "" : text;
    byId("receipt-error").textContent = isError ? text : "";
  }
  byId("receipt-print").addEventListener("click", function () {
    var order = state.paidOrder;
    receiptNote(t("r_printing"), false);
    fetch(C.agent + "/print", { method: "POST", headers: { "Content-Type": "application/json" },
                                body: JSON.stringify({ order_no: order.order_no }) })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (data) {
          if (r.ok && data.printed) { receiptNote(t("r_printed"), false); return; }
          var why = T["kiosk.ui.print_" + (data.code || "")] || data.message || t("print_failed");
          receiptNote(why + " " + t("r_others"), true);
        });
      }, function () { receiptNote(t("print_unreachable") + " " + t("r_others"), true); });
  });
  function askAddress(mode) {
    state.receiptMode = mode;
    byId("receipt-qr-panel").hidden = true;
    byId("receipt-to-panel").hidden = false;
    var input = byId("receipt-to");
    input.value = "";
    input.setAttribute("placeholder", mode === "email" ? t("email_placeholder") : t("phone_placeholder"));
    var pad = byId("receipt-to-panel").querySelector(".keypad");
    pad.setAttribute("data-page", mode === "email" ? "letters" : "digits");
    pad.classList.toggle("has-letters", mode === "email");
    receiptNote("", false);
  }
  byId("receipt-sms").addEventListener("click", function () { askAddress("sms"); });
  byId("receipt-email").addEventListener("click", function () { askAddress("email"); });
  byId("receipt-send").addEventListener("click", function () {
    var order = state.paidOrder;
    call("POST", C.api + "/orders/" + order.order_no + "/receipt", { to: byId("receipt-to").value })
      .then(function (res) {
        if (!res.ok) { receiptNote(problem(res), true); return; }
        receiptNote(res.data.message, false);
        byId("receipt-to").value = "";
        byId("receipt-to-panel").hidden = true;
      }, function () { showNet(true); receiptNote(t("error_network"), true); });
  });
  byId("receipt-qr-button").addEventListener("click", function () {
    byId("receipt-to-panel").hidden = true;
    byId("receipt-qr").setAttribute("src", C.base + "/orders/" + state.paidOrder.order_no + "/receipt-qr.svg");
    byId("receipt-qr-panel").hidden = false;
    say("receipt");
  });
  byId("receipt-done").addEventListener("click", function () { reset(); });

  // --- the scanner (keyboard wedge) -------------------------------------------------------
  var buffer = "";
  var lastKey = 0;
  document.addEventListener("keydown", function (e) {
    touch();
    var now = Date.now();
    if (now - lastKey > SCAN_GAP_MS) { buffer = ""; }
    lastKey = now;
    if (e.key === "Enter") {
      var text = buffer;
      buffer = "";
      if (text.length >= 6) { e.preventDefault(); scanned(text); }
      return;
    }
    if (e.key && e.key.length === 1) { buffer += e.key; e.preventDefault(); }
  }, true);
  function scanned(text) {
    if (state.step === "pay") {
      if (/^[0-9]{10,32}$/.test(text)) { payWithCode(text); }
      else { toast(t("scan_not_code")); }
      return;
    }
    if (state.step !== "choose" && state.step !== "identify") { return; }
    call("POST", C.api + "/scan", { payload: text }).then(function (res) {
      if (!res.ok) { toast(problem(res)); say("failed"); return; }
      setBiller(res.data.card);
      state.account = res.data.account;
      if (state.step === "choose") { state.history.push("choose"); state.step = "identify"; }
      loadAccount(byId("account-error"));
    }, function () { showNet(true); toast(t("error_network")); });
  }
  var toastTimer = null;
  function toast(text) {
    var el = byId("toast");
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.hidden = true; }, 5000);
  }

  // --- idle reset ---------------------------------------------------------------------
  var idleTimer = null;
  var countTimer = null;
  function idleWorth() {
    return state.step !== "choose" || state.elderly !== !!C.elderly_default;
  }
  function touch() {
    clearTimeout(idleTimer);
    if (!byId("idle-overlay").hidden) { hideIdle(); }
    if (idleWorth()) { idleTimer = setTimeout(showIdle, C.idle_s * 1000); }
  }
  function showIdle() {
    var left = C.countdown_s;
    var overlay = byId("idle-overlay");
    overlay.hidden = false;
    byId("idle-count").textContent = String(left);
    say("idle");
    clearInterval(countTimer);
    countTimer = setInterval(function () {
      left -= 1;
      byId("idle-count").textContent = String(Math.max(left, 0));
      if (left <= 0) { clearInterval(countTimer); reset(); }
    }, 1000);
  }
  function hideIdle() {
    clearInterval(countTimer);
    byId("idle-overlay").hidden = true;
  }
  ["pointerdown", "touchstart", "mousedown"].forEach(function (name) {
    document.addEventListener(name, function () { touch(); }, true);
  });

  function reset() {  // back to step 1 with nothing of the last customer left anywhere
    if (window.KioskVoice && typeof window.KioskVoice.reset === "function") {
      window.KioskVoice.reset();  // the next customer hears the prompts again (unmuted)
    }
    clearTimeout(pollTimer);
    clearTimeout(idleTimer);
    hideIdle();
    sessionStorage.removeItem(STORE);
    document.querySelectorAll("input.field, #plate-input").forEach(function (input) { input.value = ""; });
    ["account-error", "phone-note", "phone-error", "plate-error", "pay-error", "pay-order-no",
     "pay-amount", "confirm-account", "confirm-holder", "confirm-bills", "confirm-total",
     "account-list", "receipt-amount", "receipt-note", "receipt-error", "plate-big"]
      .forEach(function (id) { byId(id).textContent = ""; });
    document.querySelectorAll(".biller-name").forEach(function (el) { el.textContent = ""; });
    ["pay-qr", "receipt-qr"].forEach(function (id) { byId(id).removeAttribute("src"); });
    byId("pay-qr").hidden = true;
    byId("code-row").hidden = true;
    byId("sms-verify").disabled = true;
    byId("phone-accounts").hidden = true;
    byId("receipt-to-panel").hidden = true;
    byId("receipt-qr-panel").hidden = true;
    byId("receipt-lead").hidden = false;
    document.querySelector(".receipt-options").hidden = false;
    byId("toast").hidden = true;
    buffer = "";
    state = fresh();
    tab("account");
    renderPlate();
    applyElderly();
    go("choose", true);
  }

  function back() {
    var previous = state.history.pop();
    if (previous) { go(previous, true); }
  }
  byId("back-button").addEventListener("click", back);
  byId("home-button").addEventListener("click", function () { reset(); });

  // --- header: mute, clock ---------------------------------------------------------------
  function renderMute() {
    var muted = !!(window.KioskVoice && window.KioskVoice.muted);
    byId("mute-button").setAttribute("aria-pressed", muted ? "true" : "false");
    root.classList.toggle("muted", muted);
  }
  byId("mute-button").addEventListener("click", function () {
    if (window.KioskVoice && typeof window.KioskVoice.setMuted === "function") {
      window.KioskVoice.setMuted(!window.KioskVoice.muted);
    } else {
      root.classList.toggle("muted");
    }
    renderMute();
  });
  function tick() {
    var d = new Date();
    byId("clock").textContent = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }
  setInterval(tick, 15000);
  tick();

  window.addEventListener("online", function () { if (state.order) { backoff = POLL_MS; poll(); } });
  window.addEventListener("offline", function () { if (state.order || state.key) { showNet(true); } });

  // --- start: resume an open order after a reload, else step 1 --------------------------
  renderMute();
  renderPlate();
  applyElderly();
  var kept = null;
  try { kept = JSON.parse(sessionStorage.getItem(STORE) || "null"); } catch (e) { kept = null; }
  if (kept && kept.biller && billers[kept.biller] && kept.key) {
    state.elderly = !!kept.elderly;
    applyElderly();
    setBiller(billers[kept.biller]);
    state.account = kept.account;
    state.key = kept.key;
    state.total = kept.amount || 0;
    go("pay", true);
    if (kept.order_no) {
      state.order = { order_no: kept.order_no, amount_fen: kept.amount };
      byId("pay-amount").textContent = yuan(kept.amount || 0);
      poll();
    } else {
      startOrder();  // the same key: the server answers with the order it made, if any
    }
  } else {
    go("choose", true);
  }
}());
