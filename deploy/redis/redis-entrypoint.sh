#!/bin/sh
# Entrypoint for redis-master and redis-replica (redis:7.4-alpine; runs as root, then hands over
# to the image's docker-entrypoint.sh, which chowns /data and drops to the redis user).
#
#   REDIS_PASSWORD           requirepass and masterauth (every node may become master or replica)
#   REDIS_ANNOUNCE_HOSTNAME  this node's service name, announced to Sentinel instead of the
#                            container IP, which changes whenever the container is recreated
#   REDIS_REPLICAOF          set on the replica only: the initial master's host name
#
# The generated /data/redis.conf is kept across restarts because Sentinel rewrites it (the role
# after a failover). Only the password lines are refreshed on every start, so a rotated
# REDIS_PASSWORD takes effect with a restart. Use a password without spaces or quotes (hex).
set -eu

: "${REDIS_PASSWORD:?REDIS_PASSWORD is not set}"
: "${REDIS_ANNOUNCE_HOSTNAME:?REDIS_ANNOUNCE_HOSTNAME is not set}"
conf=/data/redis.conf
umask 077

if [ ! -s "$conf" ]; then
    cp /usr/local/etc/docnum/redis.conf "$conf"
    printf 'replica-announce-ip %s\n' "$REDIS_ANNOUNCE_HOSTNAME" >> "$conf"
    if [ -n "${REDIS_REPLICAOF:-}" ]; then
        printf 'replicaof %s 6379\n' "$REDIS_REPLICAOF" >> "$conf"
    fi
fi

sed -i -e '/^requirepass /d' -e '/^masterauth /d' "$conf"
printf 'requirepass %s\nmasterauth %s\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD" >> "$conf"

exec docker-entrypoint.sh redis-server "$conf"
