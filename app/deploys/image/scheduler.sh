#!/bin/sh
# Keystone scheduler loop (SPEC 8): in EVERY replica, but it runs
# `php artisan schedule:run` only while the flag /tmp/keystone-scheduler exists.
# Keystone sets the flag on exactly one replica (single mode) and moves it at
# a cutover: remove it on the old replica, wait until no schedule:run is
# running there (the busy marker is gone), and only then set it on the new one.
#
# The busy marker is created BEFORE the flag is read, so once Keystone has
# removed the flag and then seen no busy marker, this replica cannot start
# another run: never two runners, not even for a moment.
[ "${KEYSTONE_SCHEDULER_LOOP:-1}" = "1" ] || exit 0  # one-off containers (migrations)
FLAG=/tmp/keystone-scheduler
BUSY=/tmp/keystone-scheduler.running
INTERVAL="${KEYSTONE_SCHEDULER_INTERVAL:-60}"
case "$INTERVAL" in ''|*[!0-9]*) INTERVAL=60 ;; esac
[ "$INTERVAL" -ge 1 ] || INTERVAL=60
cd "${KEYSTONE_APP_DIR:-/var/www/html}" || exit 0
rm -f "$BUSY"
while :; do
  now=$(date +%s)
  sleep $((INTERVAL - now % INTERVAL))
  : > "$BUSY"
  if [ -e "$FLAG" ]; then
    php artisan schedule:run --no-interaction
  fi
  rm -f "$BUSY"
done
