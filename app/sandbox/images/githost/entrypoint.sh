#!/bin/sh
# Fresh host key per container; repositories and authorized_keys live in the
# /srv/git volume so they survive a container re-create.
set -eu
if [ ! -f /etc/ssh/ssh_host_ed25519_key ]; then
    ssh-keygen -q -t ed25519 -N '' -C "git@$(hostname)" -f /etc/ssh/ssh_host_ed25519_key
fi
mkdir -p /srv/git/.ssh /srv/git/git-shell-commands
# git-shell runs forced commands only from ~/git-shell-commands.
cp /usr/local/lib/keystone/keystone-git-serve /srv/git/git-shell-commands/keystone-git-serve
touch /srv/git/.ssh/authorized_keys
if [ -n "${KEYSTONE_ADMIN_PUBKEY:-}" ]; then
    printf '%s\n' "$KEYSTONE_ADMIN_PUBKEY" | /usr/local/sbin/keystone-authorize '*' rw
fi
chown -R git:git /srv/git
chmod 700 /srv/git/.ssh
chmod 600 /srv/git/.ssh/authorized_keys
exec /usr/sbin/sshd -D -e
