#!/usr/bin/env bash
# Set up what tests/scenarios/test_dashboard.py drives: Playwright (the Python
# package only: never `playwright install`, which downloads its own browsers)
# and Debian's chromium.  Safe to run again; prints the browser it found.
# Exit status: 0 when both are there, 1 otherwise (the tests then skip, saying why).
set -uo pipefail
PY=${PYTHON:-python3}

if ! "$PY" -c "import playwright" 2>/dev/null; then
  echo "browser_setup: installing playwright (pip)" >&2
  "$PY" -m pip install -q "playwright>=1.40" >&2 || { echo "browser_setup: pip install playwright failed" >&2; exit 1; }
fi

find_chromium() {
  for exe in "${FANOUT_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [ -n "$exe" ] && [ -x "$exe" ]; then echo "$exe"; return 0; fi
  done
  return 1
}

if ! find_chromium >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "browser_setup: installing chromium (apt-get)" >&2
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >&2 \
      || { echo "browser_setup: apt-get install chromium failed" >&2; exit 1; }
  else
    echo "browser_setup: chromium is missing; install Debian's chromium (apt-get install chromium) as root" >&2
    exit 1
  fi
fi
find_chromium || { echo "browser_setup: chromium still not found" >&2; exit 1; }
