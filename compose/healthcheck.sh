#!/bin/sh
# HEALTHCHECK probe: the node's readiness endpoint on its own HTTP port.
port="${HTTP_LISTEN:-0.0.0.0:5002}"
port="${port##*:}"
exec curl -fsS --max-time 3 -o /dev/null "http://127.0.0.1:${port}/health/ready"
