#!/usr/bin/env bash
# Install plmjax with jax[tpu] on every worker of the slice.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ -n "$REPO_URL" ] || { echo "set REPO_URL to a git URL of this repository" >&2; exit 2; }
on_all_workers "set -e; [ -d $REPO_DIR ] || git clone $REPO_URL $REPO_DIR; cd $REPO_DIR && git pull -q;
  python3 -m venv .venv && . .venv/bin/activate && pip install -q -U pip && pip install -q -e '.[tpu]'"
