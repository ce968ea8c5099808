#!/usr/bin/env bash
# Docker for the image tests (tests/test_images.py), on a Debian 12 machine as root; idempotent, and
# quick when everything is already there:
#   1. apt-get install docker.io debootstrap iptables, when missing;
#   2. start dockerd, when no daemon answers, ONLY with the flags below: by default dockerd makes a bridge
#      on a private range, adds iptables rules and turns on IP forwarding for the whole machine; with them
#      containers get host networking or none, and the machine's network is left as it was;
#   3. make the local base image tasuki-base:bookworm (debootstrap minbase with python3, python3-venv and
#      ca-certificates, then `docker import`), when missing: no image can be pulled here. The rootfs
#      tarball is cached under $CACHE, so a machine whose Docker data was wiped gets the image back in
#      seconds instead of a minute.
# Environment: TASUKI_BASE_IMAGE (default tasuki-base:bookworm), TASUKI_DOCKER_CACHE (default
# /var/cache/tasuki-docker), TASUKI_DOCKERD_LOG (default /var/log/tasuki-dockerd.log).
set -euo pipefail

BASE_IMAGE=${TASUKI_BASE_IMAGE:-tasuki-base:bookworm}
CACHE=${TASUKI_DOCKER_CACHE:-/var/cache/tasuki-docker}
LOG=${TASUKI_DOCKERD_LOG:-/var/log/tasuki-dockerd.log}
SUITE=bookworm
ROOTFS_TAR="$CACHE/$SUITE-minbase-python3.tar"
DOCKERD_READY_S=60            # seconds to wait for a started dockerd to answer

say() { echo "setup-docker: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root (it installs packages and starts dockerd); run: sudo $0"
    exit 1
fi

# --- 1. packages -----------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v iptables >/dev/null || missing+=(iptables)      # dockerd will not start without the binary
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d 101: the packages' scripts must not start dockerd themselves (with its default flags)
    policy=/usr/sbin/policy-rc.d
    had_policy=0; [ -e "$policy" ] && had_policy=1
    [ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; }
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ $had_policy = 1 ] || rm -f "$policy"
fi

# --- 2. the daemon ---------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    say "starting dockerd without bridge, iptables or IP forwarding (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --pidfile /var/run/tasuki-dockerd.pid >>"$LOG" 2>&1 </dev/null &
    deadline=$((SECONDS + DOCKERD_READY_S))
    until docker info >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            say "dockerd did not answer within ${DOCKERD_READY_S} s; the end of $LOG:"
            tail -n 20 "$LOG" >&2
            exit 1
        fi
        sleep 0.2
    done
fi

# --- 3. the base image -----------------------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    mkdir -p "$CACHE"
    if [ ! -s "$ROOTFS_TAR" ]; then
        say "debootstrap $SUITE (minbase + python3, about a minute)"
        rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        trap 'rm -rf "$rootfs"' EXIT
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$rootfs" \
            >"$CACHE/debootstrap.log" 2>&1 || { say "debootstrap failed; see $CACHE/debootstrap.log"; exit 1; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$ROOTFS_TAR.tmp" .
        mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    fi
    say "importing $ROOTFS_TAR as $BASE_IMAGE"
    docker import --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
fi
say "ready: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}'), base image $BASE_IMAGE"
