#!/bin/sh
# Keystone sandbox shim: `docker compose ...` -> Debian's docker-compose v1.
# Debian 12 ships no Compose v2 plugin; production servers have the real one.
if [ "${1:-}" = "docker-cli-plugin-metadata" ]; then
    printf '{"SchemaVersion":"0.1.0","Vendor":"Keystone","Version":"v1-shim","ShortDescription":"docker-compose v1 shim"}\n'
    exit 0
fi
[ "${1:-}" = "compose" ] && shift
exec docker-compose "$@"
