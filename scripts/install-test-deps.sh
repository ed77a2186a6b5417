#!/usr/bin/env bash
# Installs the Debian programs the test suite needs (Dovecot for the email entrance tests).
set -euo pipefail
if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then
    echo "installing dovecot-imapd for the email tests"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends dovecot-imapd >/dev/null
fi
