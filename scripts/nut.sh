#!/usr/bin/env bash
# Network UPS Tools for the kiosk agent's tests: a self-contained upsd + dummy-ups.
#
#   scripts/nut.sh install|start|stop|restart|status
#
# Debian's `nut-server` and `nut-client` (installed with apt-get when missing and run as
# root) give the real daemon and the `dummy-ups` driver. No system service is touched:
# the configuration, the state (sockets, pid files) and the simulated UPS live under a
# directory of their own (.nut/ by default, git-ignored), and upsd listens on 127.0.0.1
# only. /usr/sbin/upsd is a wrapper that refuses to start unless /etc/nut/nut.conf says
# MODE=standalone, so the daemons are started from /lib/nut directly.
#
# The UPS is named `kiosk`; its variables are the file kiosk.dev (ups.status: OL,
# battery.charge: 100, ...). Edit that file ("ups.status: OB LB") and dummy-ups serves
# the new values within a few seconds. Idempotent: `start` of a running instance does
# nothing.
#
# `install` only installs the packages (scripts/test.sh: the tests start instances of
# their own on free ports, with SELFPAY_NUT_DIR and SELFPAY_NUT_PORT set).
#
# Environment: SELFPAY_NUT_DIR (.nut), SELFPAY_NUT_PORT (3493).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${SELFPAY_NUT_DIR:-$(pwd)/.nut}"
PORT="${SELFPAY_NUT_PORT:-3493}"
UPS=kiosk
NUT_BIN=/lib/nut
export NUT_CONFPATH="$DIR" NUT_STATEPATH="$DIR/state" NUT_ALTPIDPATH="$DIR/state"

log() { echo "nut: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

installed() { [ -x "$NUT_BIN/upsd" ] && [ -x "$NUT_BIN/dummy-ups" ]; }

install_nut() {
  installed && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "NUT is not installed (run: sudo apt-get install -y nut-server nut-client)"; return 1
  fi
  log "installing Debian's nut-server and nut-client ..."
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nut-server nut-client >/dev/null
}

pid_of() {
  # the running daemon whose pid file is $1, or nothing (false)
  [ -f "$NUT_STATEPATH/$1.pid" ] || return 1
  local pid; pid=$(cat "$NUT_STATEPATH/$1.pid")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

configure() {
  mkdir -p "$NUT_STATEPATH"
  chmod 750 "$DIR" "$NUT_STATEPATH"
  printf '[%s]\n  driver = dummy-ups\n  port = %s.dev\n  desc = "selfpay test UPS"\n' \
    "$UPS" "$UPS" > "$DIR/ups.conf"
  printf 'LISTEN 127.0.0.1 %s\n' "$PORT" > "$DIR/upsd.conf"
  : > "$DIR/upsd.users"  # nobody may log in: the agent only reads variables
  chmod 640 "$DIR/ups.conf" "$DIR/upsd.conf" "$DIR/upsd.users"
  if [ ! -f "$DIR/$UPS.dev" ]; then
    printf 'ups.status: OL\nbattery.charge: 100\nbattery.runtime: 1800\ninput.voltage: 228.0\n' \
      > "$DIR/$UPS.dev"
  fi
}

start() {
  if pid_of upsd >/dev/null && pid_of "dummy-ups-$UPS" >/dev/null; then
    log "already running (upsd pid $(pid_of upsd), 127.0.0.1:$PORT)"; return 0
  fi
  stop >/dev/null 2>&1 || true
  install_nut
  if port_open "$PORT"; then log "port $PORT is taken by another process"; return 1; fi
  configure
  local user; user=$(id -un)
  # Both daemons fork into the background and write their pid files under state/.
  "$NUT_BIN/dummy-ups" -a "$UPS" -u "$user" > "$DIR/driver.log" 2>&1 \
    || { log "dummy-ups did not start"; cat "$DIR/driver.log" >&2; return 1; }
  "$NUT_BIN/upsd" -u "$user" > "$DIR/upsd.log" 2>&1 \
    || { log "upsd did not start"; cat "$DIR/upsd.log" >&2; return 1; }
  local i
  # Ready when upsd answers with the driver's data (it says WAIT until the first update).
  local i answer=""
  for i in $(seq 1 150); do
    if port_open "$PORT"; then
      answer=$(upsc "$UPS@127.0.0.1:$PORT" ups.status 2>/dev/null || true)
      if [ -n "$answer" ] && [ "$answer" != WAIT ]; then
        log "up: $UPS@127.0.0.1:$PORT ($answer), state in $DIR"; return 0
      fi
    fi
    sleep 0.1
  done
  log "upsd did not serve $UPS on 127.0.0.1:$PORT within 15 s; see $DIR/upsd.log"; return 1
}

stop() {
  local name pid
  for name in upsd "dummy-ups-$UPS"; do
    if pid=$(pid_of "$name"); then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    fi
    rm -f "$NUT_STATEPATH/$name.pid"
  done
  log "stopped"
}

status() {
  if pid=$(pid_of upsd); then echo "upsd: running (pid $pid) 127.0.0.1:$PORT"; else
    echo "upsd: stopped"; fi
  if pid=$(pid_of "dummy-ups-$UPS"); then echo "dummy-ups: running (pid $pid) $DIR/$UPS.dev"
  else echo "dummy-ups: stopped"; fi
}

case "${1:-status}" in
  install) install_nut ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|restart|status" >&2; exit 2 ;;
esac
