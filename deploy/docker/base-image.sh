#!/usr/bin/env bash
# Makes sure the base image that every shoplog Dockerfile names exists locally.
#
# The Dockerfiles say `FROM debian:bookworm-slim`. On a machine that can pull images, that is the
# public image and this script does nothing. On a machine with a Docker engine but no registry
# (this project's development machines and CI), it builds an equivalent image from Debian's own
# packages: `debootstrap --variant=minbase bookworm`, stripped of docs, man pages, locales and apt
# lists, then `docker import`ed under the same tag. Nothing prebuilt is downloaded.
#
# Usage: deploy/docker/base-image.sh [--force]
# Environment: BASE_IMAGE (default debian:bookworm-slim), DEBIAN_MIRROR (default
# http://deb.debian.org/debian).
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

if [ "${1:-}" != "--force" ] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base image $BASE_IMAGE: present"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "base image $BASE_IMAGE is missing: installing debootstrap to build it from Debian's packages"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi

root=$(mktemp -d /tmp/shoplog-base.XXXXXX)
trap '$SUDO rm -rf "$root"' EXIT
echo "base image $BASE_IMAGE: debootstrap --variant=minbase bookworm from $MIRROR (about a minute)"
started=$(date +%s)
$SUDO debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2
  echo "debootstrap failed (full log: $root.log)" >&2
  exit 1
}
rm -f "$root.log"

# What the public slim image also leaves out, now and for every package installed on top of it.
$SUDO tee "$root/etc/dpkg/dpkg.cfg.d/shoplog-slim" >/dev/null <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
$SUDO tee "$root/etc/apt/apt.conf.d/shoplog-slim" >/dev/null <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
CFG
$SUDO tee "$root/etc/apt/sources.list" >/dev/null <<SRC
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
$SUDO find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
$SUDO find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
$SUDO rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/cache/apt/* \
  "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/* "$root"/dev/*

$SUDO tar --numeric-owner -C "$root" -c . | docker import \
  --change 'CMD ["bash"]' \
  --change 'ENV LANG=C.UTF-8' \
  --message "debootstrap --variant=minbase bookworm ($MIRROR), made by shoplog's deploy/docker/base-image.sh" \
  - "$BASE_IMAGE" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$BASE_IMAGE")
echo "base image $BASE_IMAGE: built in $(( $(date +%s) - started )) s, $(( size / 1000000 )) MB"
