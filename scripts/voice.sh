#!/usr/bin/env bash
# Spoken prompts for the kiosk (elderly mode): Debian's espeak-ng, which the web tier runs
# to turn the fixed prompt texts into WAV files (adapters/voice.py caches them under
# <data_dir>/voice/).
#
#   scripts/voice.sh install|check
#
# `install` installs espeak-ng with apt-get when it is missing and this runs as root (as
# scripts/nut.sh does for NUT); otherwise it says what to run and fails, and the voice
# tests skip with that reason (SELFPAY_REQUIRE_SERVERS=1 turns the skip into a failure).
# `check` says whether espeak-ng and its Mandarin voice are there, and speaks one prompt
# into a temporary file to prove it.
#
# No sox: the prompts are served as the WAV espeak-ng writes (every browser plays it, the
# kiosk keeps each file a day, then revalidates; a prompt is 100-650 KB), so
# there is no conversion step to install or to fail.
set -euo pipefail

log() { echo "voice: $*" >&2; }

installed() { command -v espeak-ng >/dev/null; }

install_voice() {
  installed && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "espeak-ng is not installed (run: sudo apt-get install -y espeak-ng)"; return 1
  fi
  log "installing Debian's espeak-ng ..."
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng >/dev/null
}

check() {
  if ! installed; then log "espeak-ng: missing (scripts/voice.sh install)"; return 1; fi
  if ! espeak-ng --voices=cmn | grep -qw cmn; then
    log "espeak-ng has no Mandarin voice (cmn): reinstall espeak-ng-data"; return 1
  fi
  local out; out=$(mktemp --suffix=.wav)
  espeak-ng -v cmn -s 130 -w "$out" "请选择缴费项目"
  log "espeak-ng: ok ($(espeak-ng --version | head -n1)); a prompt is $(stat -c %s "$out") bytes"
  rm -f "$out"
}

case "${1:-check}" in
  install) install_voice ;;
  check) check ;;
  *) echo "usage: $0 install|check" >&2; exit 2 ;;
esac
