#!/bin/sh
# Container entrypoint: `spheromesh node` by default, any other subcommand passes through
# (`docker run spheromesh:local certs key`). Options alone mean `node OPTIONS`.
#
# For `node`, ADVERTISE_HOST defaults to this container's own IPv4 address (the one
# Docker maps its host name to), because the node's own default for a 0.0.0.0 listener is
# 127.0.0.1, which peers in other containers cannot reach.
set -eu

# Compose passes `VAR: ${VAR:-}` as an empty string when .env leaves VAR blank. The node
# takes an empty value literally (RABBITMQ_PORT= fails to parse, CALLBACK_AUTHORIZATION=
# would send an empty header, RABBITMQ_USER= would not default to guest): an empty
# variable here means "not set".
for v in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=$/\1/p'); do
    unset "$v"
done

case "${1:-node}" in
    -*) set -- node "$@" ;;
    "") set -- node ;;
esac

if [ "${1:-node}" = node ] && [ -z "${ADVERTISE_HOST:-}" ]; then
    for ip in $(hostname -i 2>/dev/null || true) $(hostname -I 2>/dev/null || true); do
        case "$ip" in
            127.*|*:*) ;;  # loopback or IPv6: not what peers reach us at
            *) ADVERTISE_HOST="$ip"; break ;;
        esac
    done
    if [ -z "${ADVERTISE_HOST:-}" ]; then
        echo "spheromesh-entrypoint: cannot find this container's IPv4 address; set ADVERTISE_HOST" >&2
        exit 1
    fi
    export ADVERTISE_HOST
    echo "spheromesh-entrypoint: ADVERTISE_HOST=$ADVERTISE_HOST" >&2
fi

exec /usr/local/bin/spheromesh "$@"
