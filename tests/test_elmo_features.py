"""ELMo as a frozen feature extractor: plmjax.finetune's TaskModel reads its L + 1 layers through a
learned scalar mix; one optimizer step moves the mix and the head, never the biLM."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from plmjax.finetune.model import HeadSpec, TaskModel, task_loss
from plmjax.train.optim import make_optimizer
from plmjax.models.elmo import Elmo, ElmoConfig


def test_scalar_mix_features_train_only_mix_and_head():
  vocab = tuple(f"w{i}" for i in range(12))
  elmo = Elmo(ElmoConfig(vocab_size=12, char_vocab=vocab, max_chars=6, char_dim=4,
                         filters=((1, 4), (2, 8)), num_highway=1, proj_size=8, hidden_size=16))
  model = TaskModel(elmo, (HeadSpec("t", "classification", 2),), pooling="mean",
                    features="scalar_mix", freeze_encoder=True)
  batch = {"input_ids": jnp.array([[1, 2, 3, 0], [4, 5, 6, 7]]),
           "attention_mask": jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]]),
           "label": jnp.array([0, 1]), "weights": jnp.ones(2)}
  params = nn.meta.unbox(model.init(jax.random.key(0), batch, method=TaskModel.init_all)["params"])
  assert params["scalar_mix"]["weights"].shape == (3,)          # token layer + 2 LSTM layers
  opt = ml_collections.ConfigDict(dict(name="adamw", learning_rate=0.1, weight_decay=0.0, b1=0.9,
                                       b2=0.999, eps=1e-8, decay="constant", warmup_frac=0.0,
                                       warmup_steps=0, end_lr=0.0, stlr_cut_frac=0.1, stlr_ratio=32.0))
  transfer = ml_collections.ConfigDict(dict(mode="features", layer_decay=1.0, gradual_unfreezing=False,
                                            unfreeze_every=0, frozen=("^encoder/",)))
  tx, _ = make_optimizer(opt, 10, params=params, transfer=transfer, num_layers=2, steps_per_epoch=10)
  grads = jax.grad(lambda p: task_loss("classification", model.apply({"params": p}, batch, task="t"),
                                       batch)[0])(params)
  new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), params, new)
  assert not any(jax.tree.leaves(moved["encoder"]))
  assert any(jax.tree.leaves(moved["scalar_mix"])) and any(jax.tree.leaves(moved["head_t"]))
