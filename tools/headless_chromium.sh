#!/bin/bash
# A headless Chromium for the report's browser test (tests/report/test_report_browser.py).
#   tools/headless_chromium.sh install    Debian's chromium package when no chromium is on PATH
#                                         (root and apt-get; exit 3 when neither can be had)
#   tools/headless_chromium.sh path       print the browser's path
set -euo pipefail

find_browser() {
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null; then command -v "$b"; return 0; fi
  done
  return 1
}

install() {
  find_browser >/dev/null && return 0
  [ "$(id -u)" = 0 ] || { echo "headless_chromium: installing chromium needs root" >&2; exit 3; }
  command -v apt-get >/dev/null || { echo "headless_chromium: no apt-get on this machine" >&2; exit 3; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
}

case "${1:-}" in
  install) install && find_browser ;;
  path) find_browser ;;
  *) echo "usage: $0 install | path" >&2; exit 2 ;;
esac
