#!/usr/bin/env bash
# Idempotent host setup for Ocellus on Debian: Debian packages (BCC, kernel
# headers, bpftrace), the /lib/modules links BCC needs, and the Python venv.
# Fast when everything is already in place: it only checks.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-/usr/bin/python3}
APT_PACKAGES=(python3-bpfcc libbpfcc bpfcc-tools bpftrace bpftool python3-venv gcc libc6-dev "linux-headers-amd64" docker.io docker-compose debootstrap busybox-static rsyslog rsyslog-gnutls)

log() { printf '[setup] %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "setup: need root to install: ${missing[*]}" >&2; exit 1; }
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# BCC compiles against /lib/modules/$(uname -r)/build. Kernels without their
# own headers get Debian's nearest ones; tracepoint programs read no kernel
# structs, so version skew is harmless.
kdir=/lib/modules/$(uname -r)
if [ ! -e "$kdir/build/Makefile" ] || [ ! -e "$kdir/source/Makefile" ]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
    [ -n "$hdr" ] && [ -n "$common" ] || { echo "setup: no kernel headers under /usr/src" >&2; exit 1; }
    log "linking $kdir/build -> $hdr, $kdir/source -> $common"
    mkdir -p "$kdir"
    ln -sfn "$hdr" "$kdir/build"
    ln -sfn "$common" "$kdir/source"
fi

# The venv uses Debian's Python (the one python3-bpfcc is built for) and sees
# only the bcc package from dist-packages, through a .pth file.
if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$VENV/bcc-only"
ln -sfn /usr/lib/python3/dist-packages/bcc "$VENV/bcc-only/bcc"
echo "$(cd "$VENV/bcc-only" && pwd)" > "$site/ocellus-bcc.pth"

stamp="$VENV/.deps-stamp"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log "installing Python dependencies"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e '.[dev]'
    touch "$stamp"
fi
"$VENV/bin/python" -c 'import bcc, nats, msgpack, pydantic' || { echo "setup: venv is incomplete" >&2; exit 1; }
