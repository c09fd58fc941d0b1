#!/bin/sh
# The sandbox's ACME CA: Pebble (ACME directory :14000, management :15000) validating
# HTTP-01 on port 80 and TLS-ALPN-01 on port 443, exactly where Let's Encrypt looks, and
# asking pebble-challtestsrv (:8053) for DNS, whose A records the sandbox sets through
# its management API (:8055).
#
# Pebble's own HTTPS certificate comes from a small CA made here once and kept in
# /var/lib/pebble (a volume), so gateways that trust it (Caddy's acme_ca_root) keep
# trusting it when the container is recreated. The *issuing* root is Pebble's own and
# new on every start: clients read it from https://ACME:15000/roots/0.
set -eu
DIR=/var/lib/pebble
ADDR="${KEYSTONE_ACME_ADDRESS:?KEYSTONE_ACME_ADDRESS is required}"
if [ ! -s "$DIR/ca.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Keystone sandbox ACME server CA" \
        -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
fi
if [ ! -s "$DIR/cert.pem" ] || [ "$(cat "$DIR/address" 2>/dev/null)" != "$ADDR" ]; then
    openssl req -newkey rsa:2048 -nodes -subj "/CN=acme" -keyout "$DIR/key.pem" -out "$DIR/req.csr" 2>/dev/null
    printf 'subjectAltName=IP:%s,DNS:acme,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$ADDR" > "$DIR/ext.cnf"
    openssl x509 -req -in "$DIR/req.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
        -days 3650 -extfile "$DIR/ext.cnf" -out "$DIR/cert.pem" 2>/dev/null
    printf '%s' "$ADDR" > "$DIR/address"
fi
cat > "$DIR/pebble-config.json" <<JSON
{"pebble": {"listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
  "certificate": "$DIR/cert.pem", "privateKey": "$DIR/key.pem",
  "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
  "certificateValidityPeriod": ${KEYSTONE_ACME_VALIDITY:-7776000}}}
JSON
# No default A record: a name nobody registered does not resolve (as on the internet).
pebble-challtestsrv -defaultIPv4 "" -defaultIPv6 "" -http01 "" -https01 "" -tlsalpn01 "" \
    -dns01 127.0.0.1:8053 -management 0.0.0.0:8055 &
export PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0
exec pebble -config "$DIR/pebble-config.json" -dnsserver 127.0.0.1:8053
