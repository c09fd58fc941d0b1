#!/bin/sh
# ensure-docker.sh: make this machine able to run Keystone's sandbox.
#
# Why: Keystone's integration tests act on real servers (containers running
# sshd and their own Docker Engine), a real registry and a real git host.
# CI and project machines are fresh Debian 12 VMs with only Debian's mirror,
# PyPI and npm reachable, so everything comes from Debian packages and every
# image is built locally. This script is idempotent: it installs only what is
# missing, starts dockerd only when `docker info` does not answer, and
# installs the `docker compose` plugin shim only when absent.
#
# No mirror URL is named here: apt already knows its mirror, and the
# sandbox reads it from apt's sources at run time for debootstrap.
set -eu

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        log "not root and no sudo: run as root, or install these Debian packages yourself:"
        log "  docker.io docker-compose debootstrap docker-registry apache2-utils openssh-client busybox-static git socat"
        exit 1
    fi
fi

# command -> package that provides it
NEED="docker:docker.io dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap \
docker-registry:docker-registry htpasswd:apache2-utils ssh-keygen:openssh-client ssh:openssh-client \
busybox:busybox-static git:git socat:socat sshd:openssh-server"

missing=""
for pair in $NEED; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
        case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg";; esac
    fi
done
# The sandbox copies /bin/busybox into scratch images, so it must be the static build.
if command -v dpkg >/dev/null 2>&1 && ! dpkg -s busybox-static >/dev/null 2>&1; then
    case " $missing " in *" busybox-static "*) ;; *) missing="$missing busybox-static";; esac
fi

if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found; install these packages (or their equivalents):$missing"
        exit 1
    fi
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || log "apt-get update failed; trying the install anyway"
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# dockerd from docker.io is not started for us (no systemd in CI containers/VMs).
if ! docker info >/dev/null 2>&1; then
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        log "starting dockerd (log: /var/log/keystone-dockerd.log)"
        $SUDO sh -c 'setsid dockerd >>/var/log/keystone-dockerd.log 2>&1 < /dev/null &'
    fi
    i=0
    until docker info >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 60 ]; then
            log "dockerd did not answer within 60 s; see /var/log/keystone-dockerd.log"
            tail -n 20 /var/log/keystone-dockerd.log >&2 || true
            exit 1
        fi
        sleep 1
    done
    log "dockerd is up"
fi

# `docker compose` (v2 syntax) via a shim over Debian's docker-compose v1.
PLUGIN_DIR="${HOME:-/root}/.docker/cli-plugins"
SHIM="$PLUGIN_DIR/docker-compose"
if ! docker compose version >/dev/null 2>&1; then
    log "installing the docker compose plugin shim at $SHIM"
    mkdir -p "$PLUGIN_DIR"
    cat > "$SHIM" <<'SHIM_EOF'
#!/bin/sh
# Keystone shim: `docker compose` -> Debian's docker-compose v1.
if [ "$1" = "docker-cli-plugin-metadata" ]; then
    printf '{"SchemaVersion":"0.1.0","Vendor":"Keystone","Version":"v1-shim","ShortDescription":"docker-compose v1 shim"}\n'
    exit 0
fi
[ "$1" = "compose" ] && shift
exec docker-compose "$@"
SHIM_EOF
    chmod 0755 "$SHIM"
fi

log "ready: $(docker version --format '{{.Server.Version}}' 2>/dev/null) / $(docker compose version 2>/dev/null | head -n1)"
