"""Test-wide settings: no network (checkpoints come from local folders), fp32 CPU."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# fp32 tests compare against fp32 references; on GPU, XLA's default fp32 matmuls use TF32
# (10-bit mantissa), so ask for full fp32 everywhere (a no-op on CPU).
import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
