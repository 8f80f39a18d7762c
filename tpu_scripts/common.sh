# Shared settings for the TPU scripts; override any of them in the environment.
#   TPU_NAME=plmjax-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32 bash tpu_scripts/create.sh
: "${TPU_NAME:=plmjax}"
: "${ZONE:=us-central2-b}"
: "${ACCELERATOR:=v4-8}"
: "${RUNTIME:=tpu-ubuntu2204-base}"
: "${REPO_URL:=}"            # git URL of this repository as the TPU VMs can reach it
: "${REPO_DIR:=plmjax}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" $PROJECT_FLAG; }
on_all_workers() { tpu ssh "$TPU_NAME" --worker=all --command="$1"; }
