#!/usr/bin/env bash
# Main job: set up, build the release preset, and start sluice-relay (the
# reference service) in the foreground on 127.0.0.1:8080 with in-memory state.
# Flags are passed through (bash scripts/run.sh --workers 128); Ctrl-C (or
# SIGTERM) drains and stops it. scripts/examples.sh runs the examples instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cmake --preset release
cmake --build --preset release
exec build/release/bin/sluice-relay "$@"
