"""Checkpoint import. `from plmjax.convert import from_hf; model, params = from_hf(folder)`."""
from plmjax.convert import bert as _bert  # noqa: F401  (registers converters)
from plmjax.convert import gpt as _gpt  # noqa: F401
from plmjax.convert import transfo_xl as _transfo_xl  # noqa: F401
from plmjax.convert import xlnet as _xlnet  # noqa: F401
from plmjax.convert.hf import CONVERTERS, CheckpointError, from_hf, read_config, read_state

__all__ = ["from_hf", "CheckpointError", "CONVERTERS", "read_config", "read_state"]
