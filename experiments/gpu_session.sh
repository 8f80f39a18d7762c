#!/usr/bin/env bash
# One GPU session's checks: the GPU tests, a short bf16 training run and the MFU benchmark.
#
#   bash experiments/gpu_session.sh [OUTDIR]        (OUTDIR defaults to $OUT, else /tmp/gpu_session)
#
# Runs under the machine's own python3 and JAX. Packages missing there may be carried as wheels in
# .whl/ (see README "GPU"); they are installed into /tmp/site first. Each section has its own time
# limit so that one failure does not cost the rest; everything is logged to OUTDIR.
set -u
OUTDIR=${1:-${OUT:-/tmp/gpu_session}}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUTDIR/gpu.txt"
python3 -c "import jax, flax, optax, orbax.checkpoint, grain; print('jax', jax.__version__, 'flax', \
flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$OUTDIR/gpu.txt"

echo "== tests"
timeout 240 python3 -m pytest -q -rfEs -p no:cacheprovider tests/test_gpu.py tests/test_attention.py \
  2>&1 | tee "$OUTDIR/tests.log" | tail -25

echo "== train: bert tiny, bfloat16, 60 steps"
timeout 120 python3 -m plmjax.cli train --config experiments/bert.py:tiny --workdir /tmp/bert_gpu \
  --config.dtype=bfloat16 --config.train.steps=60 2>&1 | tail -4

bench() {   # name, timeout, bench args...
  local name=$1 limit=$2; shift 2
  echo "== bench $name"
  timeout "$limit" python3 -m plmjax.cli bench --steps 10 --json "$OUTDIR/bench_$name.json" "$@" 2>&1 \
    | grep -v "^W0000\|^I0000" | tail -4
}
NODROP="--config.model.attention_dropout_rate=0.0"
bench bert_base_b128_dropout 120 --config experiments/bert.py:base --batch-size 128
bench bert_base_b128_cudnn 120 --config experiments/bert.py:base --batch-size 128 $NODROP
bench bert_base_b128_xla 120 --config experiments/bert.py:base --batch-size 128 $NODROP \
  --config.model.attention_impl=xla
bench gpt2_small_b16_cudnn 120 --config experiments/gpt2.py:base --batch-size 16 $NODROP
bench gpt2_small_b16_xla 120 --config experiments/gpt2.py:base --batch-size 16 $NODROP \
  --config.model.attention_impl=xla
echo "== done"
