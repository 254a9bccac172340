#!/usr/bin/env bash
# Render an evaluate --report page in headless Chromium (Debian's `chromium` package) and save a
# screenshot, to check by eye or by test that the self-contained HTML really displays.
# Usage: tests/render_report.sh REPORT/index.html SCREENSHOT.png
set -euo pipefail
page=$(realpath "$1")
shot=$(realpath -m "$2")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# The networking flags keep Chromium from reaching out; the page needs nothing from outside.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1200,2400 --screenshot="$shot" "file://$page"
test -s "$shot"
