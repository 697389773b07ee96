#!/usr/bin/env bash
# Builds a Debian 12 base image without a registry: debootstrap (minbase) of
# bookworm, imported with `docker import`. Skips the work when the tag exists.
#   scripts/build-base-image.sh [TAG]     (default ocellus-base:bookworm)
# Then: docker build --build-arg BASE_IMAGE=TAG -f deploy/Dockerfile .
set -euo pipefail

TAG=${1:-ocellus-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "[base-image] $TAG exists"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "base-image: apt-get install debootstrap" >&2; exit 1; }

root=$(mktemp -d /var/tmp/ocellus-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "[base-image] debootstrap bookworm into $root"
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# What the official image has too: apt sources for updates and security fixes.
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
# Certificate authorities the host added (a TLS-intercepting proxy's, say) are
# trusted in images built on this base once they install ca-certificates.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
echo "[base-image] imported $TAG"
