#!/bin/sh
# Entrypoint of spheromesh-rabbitmq:local: writes the default-user configuration from the
# environment, then execs the broker (tini is PID 1, so SIGTERM reaches it and it stops
# cleanly: "RabbitMQ is asked to stop..." ... exit 0).
#
#   RABBITMQ_DEFAULT_USER       (default: spheromesh)
#   RABBITMQ_DEFAULT_PASS       or RABBITMQ_DEFAULT_PASS_FILE (e.g. /run/secrets/...)
#   RABBITMQ_DEFAULT_VHOST      (default: /)
#
# The user is created only when the database (the /var/lib/rabbitmq volume) is empty:
# changing the password later needs `rabbitmqctl change_password`.
set -eu

if [ -n "${RABBITMQ_DEFAULT_PASS_FILE:-}" ]; then
    RABBITMQ_DEFAULT_PASS="$(cat "$RABBITMQ_DEFAULT_PASS_FILE")"
fi
conf=/etc/rabbitmq/conf.d/10-default-user.conf
if [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then
    user="${RABBITMQ_DEFAULT_USER:-spheromesh}"
    case "$user$RABBITMQ_DEFAULT_PASS" in
        *"
"*) echo "rabbitmq-entrypoint: user/password must be one line" >&2; exit 1 ;;
    esac
    umask 077
    {
        echo "default_user = $user"
        echo "default_pass = $RABBITMQ_DEFAULT_PASS"
        echo "default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}"
        echo "default_permissions.configure = .*"
        echo "default_permissions.read = .*"
        echo "default_permissions.write = .*"
        echo "default_user_tags.administrator = true"
    } > "$conf"
    echo "rabbitmq-entrypoint: default user '$user' (created if the database is new)" >&2
else
    rm -f "$conf"
    echo "rabbitmq-entrypoint: RABBITMQ_DEFAULT_PASS unset: only guest (loopback-only) on a new database" >&2
fi
unset RABBITMQ_DEFAULT_PASS RABBITMQ_DEFAULT_PASS_FILE

case "${1:-rabbitmq-server}" in
    rabbitmq-server) shift 2>/dev/null || true
        # The package's /usr/sbin wrapper re-execs through su when run as root and sends
        # output to a file; as the rabbitmq user the real script can be exec'd directly.
        exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@" ;;
    *) exec "$@" ;;
esac
