#!/bin/sh
# The htpasswd line (bcrypt, made on the host with `htpasswd -Bbn`) arrives in
# the environment so that no bind mount outlives `sandbox down`.
set -eu
printf '%s\n' "${REGISTRY_HTPASSWD:?REGISTRY_HTPASSWD is required}" > /etc/docker/registry/htpasswd
exec /usr/bin/docker-registry serve /etc/docker/registry/config.yml
