#!/usr/bin/env bash
# Installs Debian's Prometheus server and promtool for tests/test_monitoring.py, which start their own
# prometheus process (a temporary config and data directory, a free port on 127.0.0.1). Idempotent: does
# nothing when both commands are already on PATH. The package's own service is never started: a
# policy-rc.d that refuses every start is in place during the install (and removed after, if we made it).
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "setup-prometheus.sh: installing the Debian package prometheus needs root (run it with sudo)" >&2
    exit 1
fi
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# setup-prometheus.sh: no service starts while prometheus is installed\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
trap '[ -z "$made_policy" ] || rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version 2>&1 | head -1
