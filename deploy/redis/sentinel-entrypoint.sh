#!/bin/sh
# Entrypoint for redis-sentinel-N (redis:7.4-alpine).
#
#   REDIS_PASSWORD               the data nodes' password (sentinel auth-pass)
#   SENTINEL_ANNOUNCE_HOSTNAME   this Sentinel's service name, announced to the other Sentinels
#
# Sentinel must be able to rewrite its configuration file, so the read-only template is copied
# into the Sentinel's volume on first start and used from there ever after. The auth-pass line is
# refreshed on every start (password rotation = restart the Sentinels).
set -eu

: "${REDIS_PASSWORD:?REDIS_PASSWORD is not set}"
: "${SENTINEL_ANNOUNCE_HOSTNAME:?SENTINEL_ANNOUNCE_HOSTNAME is not set}"
conf=/data/sentinel.conf
umask 077

if [ ! -s "$conf" ]; then
    cp /usr/local/etc/docnum/sentinel.conf "$conf"
    printf 'sentinel announce-ip %s\n' "$SENTINEL_ANNOUNCE_HOSTNAME" >> "$conf"
fi

sed -i -e '/^sentinel auth-pass mymaster /d' "$conf"
printf 'sentinel auth-pass mymaster %s\n' "$REDIS_PASSWORD" >> "$conf"

exec docker-entrypoint.sh redis-server "$conf" --sentinel
