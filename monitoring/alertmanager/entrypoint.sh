#!/bin/sh
# Alertmanager entrypoint for docnum: turn secrets from the environment into the
# files that alertmanager.yml references (*_file settings), then exec
# Alertmanager.  POSIX sh so it runs in the busybox-based prom/alertmanager image.
#
#   SLACK_WEBHOOK_URL      -> $SECRETS_DIR/slack_webhook_url
#   PAGERDUTY_SERVICE_KEY  -> $SECRETS_DIR/pagerduty_service_key
#   SMTP_AUTH_PASSWORD     -> $SECRETS_DIR/smtp_auth_password
#
# A variable that is unset/empty is accepted only if its file already exists
# (e.g. mounted as a Docker secret); otherwise the script exits 1 instead of
# starting Alertmanager with a receiver that can never deliver.
# The variables are removed from the environment before exec.
#
# Overridable for tests: SECRETS_DIR (default /etc/alertmanager/secrets),
# ALERTMANAGER_BIN (default /bin/alertmanager).
set -eu

SECRETS_DIR="${SECRETS_DIR:-/etc/alertmanager/secrets}"
ALERTMANAGER_BIN="${ALERTMANAGER_BIN:-/bin/alertmanager}"

umask 077
mkdir -p "$SECRETS_DIR"

missing=0
write_secret() {
    var=$1
    file="$SECRETS_DIR/$2"
    eval "val=\${$var-}"
    if [ -n "$val" ]; then
        printf '%s' "$val" > "$file.tmp"
        mv -f "$file.tmp" "$file"
    elif [ ! -s "$file" ]; then
        echo "entrypoint: $var is not set and $file does not exist" >&2
        missing=1
    fi
    unset val
}

write_secret SLACK_WEBHOOK_URL slack_webhook_url
write_secret PAGERDUTY_SERVICE_KEY pagerduty_service_key
write_secret SMTP_AUTH_PASSWORD smtp_auth_password
[ "$missing" -eq 0 ] || exit 1

unset SLACK_WEBHOOK_URL PAGERDUTY_SERVICE_KEY SMTP_AUTH_PASSWORD

# Overriding an image's entrypoint drops its default command; restore it.
if [ "$#" -eq 0 ]; then
    set -- --config.file=/etc/alertmanager/alertmanager.yml --storage.path=/alertmanager
fi
exec "$ALERTMANAGER_BIN" "$@"
