#!/usr/bin/env bash
# Installs the Debian programs the test suite needs (Dovecot for the email entrance tests,
# Chromium for the console's browser tests, PostgreSQL for the memory's second engine).
set -euo pipefail
# Dovecot: a real IMAP server for the email entrance; openssl: test TLS certificates.
missing=()
if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then
    missing+=(dovecot-imapd)
fi
if ! command -v openssl >/dev/null 2>&1; then
    missing+=(openssl)
fi
# Chromium: the console's browser tests drive it through Playwright (which cannot download
# its own browser here).
if [ ! -x /usr/bin/chromium ]; then
    missing+=(chromium)
fi
# PostgreSQL: initdb and pg_ctl under /usr/lib/postgresql/*/bin. Its service is not used:
# tests/pg.py starts a throwaway cluster per test run.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} for the tests"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
