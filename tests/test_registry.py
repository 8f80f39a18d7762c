"""The registry lists every survey model, builds the implemented ones, and README's table is
generated from it."""
import os

import jax
import jax.numpy as jnp
import pytest

from plmjax.models import registry

SURVEY_MODELS = {"elmo", "ulmfit", "siatl", "gpt1", "gpt2", "bert", "bert_wwm", "roberta", "spanbert",
                 "mass", "unilm", "ernie1", "ernie_thu", "mtdnn", "ernie2", "xlnet", "transformer_xl"}


def test_every_survey_model_is_listed():
  assert SURVEY_MODELS <= set(registry.SURVEY)


@pytest.mark.parametrize("name", sorted(n for n, s in registry.SURVEY.items()
                                        if s.module is not None and s.name in ("bert", "roberta", "gpt1", "gpt2")))
def test_implemented_models_build_and_run(name):
  model, cfg = registry.build(name, vocab_size=40, hidden_size=16, num_layers=1, num_heads=2,
                              mlp_dim=32, max_len=20)
  ids = jnp.full((1, 6), 3, jnp.int32)
  out = model.apply(model.init(jax.random.key(0), {"input_ids": ids}), {"input_ids": ids})
  assert out["hidden"].shape == (1, 6, 16)


def test_unknown_names_and_keys_are_errors():
  with pytest.raises(KeyError, match="unknown model"):
    registry.build("bort")
  with pytest.raises(KeyError, match="hiden_size"):
    registry.build("bert", hiden_size=3)


def test_readme_table_is_generated_from_the_registry():
  readme = os.path.join(os.path.dirname(__file__), "..", "README.md")
  text = open(readme, encoding="utf-8").read()
  assert registry.markdown_table() in text, \
      "README model table is stale: run `python -m plmjax.models.registry --update-readme README.md`"
