#!/bin/sh
# Entrypoint of sandbox servers (with and without Docker).
#
# Why at start and not at build time: every server must have its own host key,
# as a freshly created cloud server does, so the key is generated here, only
# when the container's filesystem has none (a restart keeps it, a new
# container gets a new one).
set -eu

if [ ! -f /etc/ssh/ssh_host_ed25519_key ]; then
    ssh-keygen -q -t ed25519 -N '' -C "root@$(hostname)" -f /etc/ssh/ssh_host_ed25519_key
fi

mkdir -p /root/.ssh /run/sshd
chmod 700 /root/.ssh
if [ -n "${KEYSTONE_ROOT_PUBKEY:-}" ] && [ ! -s /root/.ssh/authorized_keys ]; then
    printf '%s\n' "$KEYSTONE_ROOT_PUBKEY" > /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
fi
if [ -n "${KEYSTONE_ROOT_PASSWORD:-}" ] && [ ! -f /var/lib/keystone-password-set ]; then
    printf 'root:%s\n' "$KEYSTONE_ROOT_PASSWORD" | chpasswd
    touch /var/lib/keystone-password-set
fi

# Loopback forwarders: the registry and the git host answer inside each server
# at the same 127.0.0.1:PORT address the host uses. Format: "LPORT=IP:PORT ...".
if command -v socat >/dev/null 2>&1; then
    for fwd in ${KEYSTONE_FORWARDS:-}; do
        lport=${fwd%%=*}
        target=${fwd#*=}
        setsid socat "TCP-LISTEN:${lport},bind=127.0.0.1,reuseaddr,fork" "TCP:${target}" \
            >"/var/log/keystone-forward-${lport}.log" 2>&1 </dev/null &
    done
fi

# The inner engine's daemon.json is written even on the bare server, so that a
# Docker installed later by provisioning starts with non-conflicting subnets.
if [ -n "${KEYSTONE_DAEMON_JSON:-}" ] && [ ! -f /etc/docker/daemon.json ]; then
    mkdir -p /etc/docker
    printf '%s\n' "$KEYSTONE_DAEMON_JSON" > /etc/docker/daemon.json
fi
# The same for fail2ban (provisioning installs it): a socket left by the previous boot makes
# `service fail2ban start` refuse to start.
rm -f /var/run/fail2ban/fail2ban.sock /var/run/fail2ban/fail2ban.pid
if command -v dockerd >/dev/null 2>&1 && [ "${KEYSTONE_START_DOCKERD:-1}" = "1" ]; then
    # After a restart of this container /run still holds the previous boot's pid files,
    # and their pids belong to other processes now: dockerd would wait for a
    # "still running" containerd that is not there and give up (a real server's /run
    # is a fresh tmpfs at every boot).
    rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
    setsid dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
    dockerd_pid=$!
    # overlay2 (chosen when /var/lib/docker sits on the host's ext4/xfs) and fuse-overlayfs
    # (needs FUSE from the host kernel) are faster than vfs: if the engine dies at start
    # with one of them, fall back (overlay2 -> fuse-overlayfs when /dev/fuse exists -> vfs)
    # rather than leave the server without Docker.
    driver=$(sed -n 's/.*"storage-driver": *"\([^"]*\)".*/\1/p' /etc/docker/daemon.json 2>/dev/null)
    if [ "$driver" = overlay2 ] || [ "$driver" = fuse-overlayfs ]; then
        (
            pid=$dockerd_pid
            while [ "$driver" != vfs ]; do
                sleep 6
                kill -0 "$pid" 2>/dev/null && exit 0
                next=vfs
                if [ "$driver" = overlay2 ] && [ -e /dev/fuse ]; then next=fuse-overlayfs; fi
                echo "keystone: dockerd failed with $driver; falling back to $next" >>/var/log/dockerd.log
                sed -i "s/\"$driver\"/\"$next\"/" /etc/docker/daemon.json
                setsid dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
                pid=$!
                driver=$next
            done
        ) &
    fi
fi

exec /usr/sbin/sshd -D -e
