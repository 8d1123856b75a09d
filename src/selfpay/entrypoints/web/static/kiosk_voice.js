// Spoken prompts on the kiosk: window.KioskVoice. Plain JS, no build step.
//
//   KioskVoice.say("choose")      speak a step's prompt (stops the one before)
//   KioskVoice.setMuted(true)     the mute button; remembered in sessionStorage
//   KioskVoice.muted              true while muted
//   KioskVoice.setElderly(true)   slower speech; null: back to the page's data-elderly
//   KioskVoice.reset()            the idle reset: next customer, so unmute and stop
//   KioskVoice.audio              the <audio> element (to show a speaker while it plays)
//
// The audio is GET /kiosk/voice/<lang>/<key>.wav[?elderly=1], made by the server with
// espeak-ng. <lang> is the page's <html lang> (en or zh-CN). When it speaks is the server's
// SELFPAY_VOICE, given to the page as <html data-voice="elderly|always|off">: "elderly"
// (the default) speaks in elderly mode only, which is <html data-elderly="1"> or
// setElderly(true). The mute is for the customer at the terminal now: sessionStorage,
// cleared by reset() when the idle countdown starts over.
//
// Never throws: a prompt is a help, not a step. When the browser refuses to play without
// a touch (autoplay policy), the prompt waits and plays on the next touch or key; when
// the server cannot make it (503: no espeak-ng), the kiosk stays silent.
(function () {
  "use strict";

  var STORE = "selfpay.kiosk.voiceMuted";
  var KEYS = ["choose", "identify", "identify_plate", "confirm_plate", "confirm", "pay",
              "paid", "receipt", "idle", "failed", "reconnecting"];
  var root = document.documentElement;
  var audio = null;
  var waiting = null; // the key refused by the autoplay policy, said on the next touch
  var elderly = null; // null: the page's data-elderly
  var muted = readMuted();

  function attr(name) {
    var v = root.getAttribute(name);
    if (v === null && document.body) v = document.body.getAttribute(name);
    return v;
  }

  function readMuted() {
    try {
      return window.sessionStorage.getItem(STORE) === "1";
    } catch (e) {
      return false; // storage refused: the mute lasts as long as the page
    }
  }

  function writeMuted(value) {
    try {
      if (value) window.sessionStorage.setItem(STORE, "1");
      else window.sessionStorage.removeItem(STORE);
    } catch (e) { /* as above */ }
  }

  function lang() {
    return (root.getAttribute("lang") || "").toLowerCase().indexOf("en") === 0 ? "en" : "zh-CN";
  }

  function isElderly() {
    if (elderly !== null) return elderly;
    var v = attr("data-elderly");
    return v === "1" || v === "true";
  }

  function speaks() {
    var mode = attr("data-voice") || "elderly";
    if (mode === "off") return false;
    return mode === "always" || isElderly();
  }

  function url(key) {
    return "/kiosk/voice/" + lang() + "/" + key + ".wav" + (isElderly() ? "?elderly=1" : "");
  }

  function element() {
    if (!audio && typeof window.Audio === "function") {
      audio = new window.Audio();
      audio.preload = "auto";
      // a 404 or 503 (no espeak-ng): stay silent, nothing to retry
      audio.addEventListener("error", function () { waiting = null; });
    }
    return audio;
  }

  function stop() {
    waiting = null;
    try {
      if (audio && !audio.paused) audio.pause();
    } catch (e) { /* never mind */ }
  }

  // Says `key`; true when it asked the browser to play it.
  function say(key) {
    try {
      stop();
      if (muted || KEYS.indexOf(key) < 0 || !speaks()) return false;
      var a = element();
      if (!a) return false;
      a.src = url(key);
      var played = a.play();
      if (played && typeof played.catch === "function") {
        played.catch(function (err) {
          // NotAllowedError: no touch yet under the autoplay policy; try on the next one.
          // Anything else (no such file, cannot decode) stays silent.
          if (err && err.name === "NotAllowedError" && !muted) waiting = key;
        });
      }
      return true;
    } catch (e) {
      return false;
    }
  }

  function onTouch() {
    if (waiting === null) return;
    var key = waiting;
    waiting = null;
    say(key);
  }

  function setMuted(value) {
    muted = !!value;
    writeMuted(muted);
    if (muted) stop();
  }

  function setElderly(value) {
    elderly = value === null || value === undefined ? null : !!value;
  }

  function reset() {
    stop();
    elderly = null;
    muted = false;
    writeMuted(false);
  }

  ["pointerdown", "touchstart", "keydown"].forEach(function (name) {
    document.addEventListener(name, onTouch, true);
  });

  var api = {say: say, setMuted: setMuted, setElderly: setElderly, reset: reset,
             url: url, keys: KEYS.slice()};
  Object.defineProperty(api, "muted", {get: function () { return muted; }, enumerable: true});
  Object.defineProperty(api, "elderly", {get: isElderly, enumerable: true});
  Object.defineProperty(api, "audio", {get: element, enumerable: true});
  window.KioskVoice = api;
})();
