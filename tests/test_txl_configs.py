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
