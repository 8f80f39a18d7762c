#!/usr/bin/env bash
# Follow worker 0's log (WORKER=n for another).
set -euo pipefail
source "$(dirname "$0")/common.sh"
tpu ssh "$TPU_NAME" --worker="${WORKER:-0}" --command="tail -n 50 -f ~/plmjax.log"
