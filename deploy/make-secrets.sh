#!/usr/bin/env bash
# Secrets for deploy/docker-compose.yml: a CA, a server certificate for
# nats, and per Ocellus service a client certificate and a NATS password.
#
#   deploy/make-secrets.sh [DIR]     # DIR defaults to deploy/secrets
#
# Writes DIR/<service>/{ca.pem,cert.pem,key.pem,password} (mounted into that
# service only), DIR/nats/{ca.pem,cert.pem,key.pem} (the server's, readable
# by its uid 65534) and DIR/nats.env, the passwords nats-server checks
# against (OCELLUS_NATS_<SERVICE>_PASSWORD; give it to compose with
# --env-file or append it to .env). Never overwrites an existing DIR.
set -euo pipefail

dir=${1:-$(dirname "$0")/secrets}
services=(sensor enricher enforcer exporter cli)
days=825

if [ -e "$dir" ]; then
    echo "make-secrets: $dir exists; remove it to make new secrets" >&2
    exit 1
fi
umask 077
mkdir -p "$dir/nats"
cd "$dir"

openssl req -x509 -newkey ed25519 -nodes -days "$days" -subj "/CN=ocellus-ca" \
    -keyout ca-key.pem -out ca.pem 2>/dev/null

issue() {  # issue NAME SUBJECT-ALT-NAME OUTDIR
    local name=$1 san=$2 out=$3
    openssl req -newkey ed25519 -nodes -subj "/CN=$name" \
        -keyout "$out/key.pem" -out "$out/req.pem" 2>/dev/null
    openssl x509 -req -in "$out/req.pem" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -days "$days" -extfile <(printf 'subjectAltName=%s\n' "$san") \
        -out "$out/cert.pem" 2>/dev/null
    rm "$out/req.pem"
    cp ca.pem "$out/ca.pem"
}

issue nats "DNS:nats,DNS:localhost,IP:127.0.0.1" nats
chown -R 65534:65534 nats   # nats-server runs as nobody

: > nats.env
for service in "${services[@]}"; do
    mkdir -p "$service"
    issue "$service" "DNS:$service" "$service"
    password=$(openssl rand -hex 24)
    printf '%s' "$password" > "$service/password"
    printf 'OCELLUS_NATS_%s_PASSWORD=%s\n' "${service^^}" "$password" >> nats.env
done
rm -f ca-key.pem ca.srl   # nothing more to sign: the CA key is not kept
chmod 755 . nats
echo "make-secrets: wrote $(pwd)"
