#!/bin/sh
# The images' health check: healthy while the running sound-creator process
# refreshes its liveness file ($LIVENESS_FILE, every 10 s; cli/src/server.rs).
# A stale or missing file means the process is gone or its runtime is stuck.
file="${LIVENESS_FILE:-/tmp/sound-creator.alive}"
[ -n "$(find "$file" -mmin -1 2>/dev/null)" ]
