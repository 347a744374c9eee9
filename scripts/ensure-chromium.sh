#!/usr/bin/env bash
# The browser tests drive Debian's chromium with Playwright (no browser download). Install it when missing and
# we may (root with apt); otherwise those tests say why they are skipped.
set -u
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests ..."
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "could not install chromium: the browser tests will say so"
fi
exit 0
