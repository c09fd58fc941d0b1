#!/usr/bin/env bash
# Debian's chromium for the Playwright browser tests (Playwright's own browser
# download does not work on these machines; the tests pass /usr/bin/chromium
# as executablePath). Idempotent.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi
