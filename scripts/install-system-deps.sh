#!/usr/bin/env bash
# Debian packages the test suite needs beyond Python: Chromium for browser tests, CJK
# fonts so pages and screenshots render Chinese, poppler-utils to rasterise PDFs for
# decoding, nginx for the load-balancing test (scripts/nginx.sh runs a private instance; the
# system service is not used). PostgreSQL, Redis and RabbitMQ are expected to be running.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || need+=(fonts-noto-cjk)
command -v pdftoppm >/dev/null || need+=(poppler-utils)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (run: sudo apt-get install -y ${need[*]})" >&2
  exit 0
fi
echo "installing ${need[*]} ..." >&2
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
