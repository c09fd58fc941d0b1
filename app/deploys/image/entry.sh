#!/bin/sh
# Keystone's entry wrapper (ENTRYPOINT of every managed Laravel image).
# Starts the scheduler loop beside the main process -- it runs `schedule:run`
# only while Keystone has set the flag in this replica -- and hands over to
# the base image's own entrypoint (serversideup/php) or to the command.
# One-off containers (migrations) set KEYSTONE_SCHEDULER_LOOP=0. Without arguments
# (the FrankenPHP base runs it from /etc/entrypoint.d) it only starts the loops.
# storage/ is the environment's persistent volume (app.drivers.laravel): create any
# Laravel directory an existing volume lacks, as the app's user (so with its owner).
( cd "${KEYSTONE_APP_DIR:-/var/www/html}" 2>/dev/null && mkdir -p storage/app/public \
    storage/framework/cache/data storage/framework/sessions storage/framework/views \
    storage/logs ) 2>/dev/null || true
if [ -x /opt/keystone/scheduler.sh ]; then
  /opt/keystone/scheduler.sh &
fi
# Embedded worker (web service option, not for production): queue:work beside the web server.
if [ "${KEYSTONE_EMBEDDED_WORKER:-0}" = "1" ]; then
  ( cd "${KEYSTONE_APP_DIR:-/var/www/html}" && while :; do
      php artisan queue:work --sleep=3 --tries=3 --max-time=3600; sleep 1
    done ) &
fi
[ "$#" -gt 0 ] || exit 0
if command -v docker-php-serversideup-entrypoint >/dev/null 2>&1; then
  exec docker-php-serversideup-entrypoint "$@"
fi
exec "$@"
