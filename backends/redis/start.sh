#!/bin/sh
# Start a throwaway redis-server on a free 127.0.0.1 port and print its URL on stdout.
# Options: --aof (appendfsync always), --password PW, --port N, --data-dir DIR.
# Ctrl-C (or SIGTERM) stops it and removes its temporary data directory.
#   ./backends/redis/start.sh            # -> redis://127.0.0.1:41234/0
#   UNIDIST_URL=$(...) in another shell, or use the printed URL directly.
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
exec "${PYTHON:-python3}" "$here/server.py" "$@"
