"""Checkpoint conversion with Hugging Face, both ways.

    from plmjax.convert import from_hf, to_hf
    model, params = from_hf(folder)                        # HF folder -> (flax module, params)
    to_hf("bert", model.config, params, folder)            # -> config.json + model.safetensors

Run folders (plmjax.convert.run): `export_run(run_dir, hf_dir)` (a plmjax training run, with its
tokenizer) and `import_run(hf_dir, run_dir)` (a plmjax run folder that `plmjax eval`,
`train.init_from` and `model.init_from` take); `plmjax convert SRC DST` picks the direction.
"""
from plmjax.convert import bert as _bert  # noqa: F401  (registers converters)
from plmjax.convert import gpt as _gpt  # noqa: F401
from plmjax.convert import transfo_xl as _transfo_xl  # noqa: F401
from plmjax.convert import xlnet as _xlnet  # noqa: F401
from plmjax.convert.hf import (CONVERTERS, EXPORTERS, CheckpointError, from_hf, read_config,
                               read_state, to_hf)

__all__ = ["from_hf", "to_hf", "CheckpointError", "CONVERTERS", "EXPORTERS", "read_config", "read_state"]
