#!/usr/bin/env bash
# Launch one training run on every worker (each host runs the same command; JAX initialises the
# multi-host runtime from the TPU environment). Logs go to ~/plmjax.log on each worker.
#   bash tpu_scripts/launch.sh --config experiments/bert.py:base --workdir gs://BUCKET/bert_base
set -euo pipefail
source "$(dirname "$0")/common.sh"
args=$(printf '%q ' "$@")
on_all_workers "cd $REPO_DIR && . .venv/bin/activate && nohup plmjax train --multihost $args > ~/plmjax.log 2>&1 &"
