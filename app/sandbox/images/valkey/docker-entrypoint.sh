#!/bin/sh
set -eu
first=${1:-valkey-server}
if [ "${first#-}" != "$first" ] || [ "${first%.conf}" != "$first" ]; then
    set -- valkey-server "$@"
fi
case "$1" in
    valkey-server|redis-server)
        has_pm=0
        for a in "$@"; do [ "$a" = "--protected-mode" ] && has_pm=1; done
        [ "$has_pm" = 1 ] || set -- "$@" --protected-mode no
        if [ "$(id -u)" = "0" ]; then
            chown -R redis:redis /data 2>/dev/null || true
            exec setpriv --reuid=redis --regid=redis --init-groups "$@"
        fi
        ;;
esac
exec "$@"
