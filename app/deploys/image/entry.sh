#!/bin/sh
# Keystone's entry wrapper (ENTRYPOINT of every managed Laravel image).
# Starts the scheduler loop beside the main process -- it runs `schedule:run`
# only while Keystone has set the flag in this replica -- and hands over to
# the base image's own entrypoint (serversideup/php) or to the command.
# One-off containers (migrations) set KEYSTONE_SCHEDULER_LOOP=0.
if [ -x /opt/keystone/scheduler.sh ]; then
  /opt/keystone/scheduler.sh &
fi
if command -v docker-php-serversideup-entrypoint >/dev/null 2>&1; then
  exec docker-php-serversideup-entrypoint "$@"
fi
exec "$@"
