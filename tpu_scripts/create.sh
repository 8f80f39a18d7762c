#!/usr/bin/env bash
# Create a TPU VM (single host or pod slice). SPOT=1 asks for a spot/preemptible slice.
set -euo pipefail
source "$(dirname "$0")/common.sh"
tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME" ${SPOT:+--spot}
