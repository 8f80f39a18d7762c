#!/usr/bin/env bash
# Stop the run on every worker and delete the slice.
set -euo pipefail
source "$(dirname "$0")/common.sh"
on_all_workers "pkill -f 'plmjax train' || true" || true
tpu delete "$TPU_NAME" --quiet
