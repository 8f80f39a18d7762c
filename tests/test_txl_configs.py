"""Every Transformer-XL / XLNet experiment config loads and its model section builds a model config
(the large settings are only constructed, never initialised)."""
import pytest

from plmjax.models import registry
from plmjax.train.config import load_config

CASES = [("experiments/transformer_xl.py", a) for a in ("tiny", "wt103_base", "wt103_large", "enwik8_base")] \
    + [("experiments/xlnet.py", a) for a in ("tiny", "base", "large")]


@pytest.mark.parametrize("path,arg", CASES)
def test_config_builds(path, arg):
  c = load_config(f"{path}:{arg}")
  fields = {k: v for k, v in c.model.items() if k != "name"}
  vocab = c.data.vocab_size if arg != "tiny" else 300
  _, cfg = registry.build(c.model.name, vocab_size=vocab, **fields)
  if c.model.name == "transformer_xl":
    assert c.data.seq_len % cfg.segment_len == 0
    assert all(x < vocab for x in cfg.cutoffs)
  else:
    assert c.objective.name == "plm" and c.objective.num_predict < c.data.seq_len


def test_unknown_size_is_an_error():
  with pytest.raises(ValueError, match="size"):
    load_config("experiments/transformer_xl.py:huge")


def test_adaptive_softmax_params_shard_on_every_mesh():
  """cutoffs add cluster_weight [C, d] / cluster_bias [C]: their logical axes resolve on the mesh
  (once named ("table", "table"), which flax refuses), so an adaptive Transformer-XL trains."""
  import jax
  import jax.numpy as jnp
  from plmjax.train import mesh as mesh_lib
  from plmjax.train.state import param_shardings
  c = load_config("experiments/transformer_xl.py:tiny")
  fields = {k: v for k, v in c.model.items() if k != "name"}
  fields.update(cutoffs=(40, 90), div_val=2)
  model, _ = registry.build("transformer_xl", vocab_size=148, **fields)
  mesh = mesh_lib.make_mesh(c.mesh)
  ids = jnp.zeros((2, int(fields["segment_len"])), jnp.int32)
  shardings = param_shardings(model, {"input_ids": ids, "labels": ids}, mesh)
  names = {"/".join(str(getattr(k, "key", k)) for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(shardings)[0]}
  assert any("cluster_weight" in n for n in names) and any("cluster_bias" in n for n in names)
