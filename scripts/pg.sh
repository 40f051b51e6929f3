#!/usr/bin/env bash
# Stops or starts the test PostgreSQL that scripts/test-services.sh set up (used by fault tests).
set -euo pipefail
: "${PGCTL_CMD:?run under scripts/test-services.sh}"
case "${1:-}" in
  start) $PGCTL_CMD -o "$PG_OPTIONS" start ;;
  stop) $PGCTL_CMD -m fast stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
