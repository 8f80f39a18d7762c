"""ERNIE 1.0 checkpoints (transformers' ErnieModel / ErnieForMaskedLM / ErnieForPreTraining, model_type
"ernie") through `from_hf`, with and without the task-type embedding (`use_task_id`): hidden states,
pooled output and logits within 1e-4 of transformers, fp32, random weights."""
import jax.numpy as jnp
import numpy as np
import pytest

from tests.hf_reference import SMALL, random_batch, randomize, save, torch, transformers
from plmjax.convert import from_hf

TOL = 1e-4


def ernie_config(**kw):
  s = SMALL
  return transformers.ErnieConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                  num_attention_heads=s["heads"], intermediate_size=s["mlp"],
                                  max_position_embeddings=s["positions"], **kw)


def _max_diff(ours, theirs, mask):
  ours, theirs = np.asarray(ours), theirs.detach().numpy()
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  return float(np.abs(ours - theirs)[mask.astype(bool)].max())


@pytest.mark.parametrize("cls_name,use_task_id", [("ErnieModel", True), ("ErnieForMaskedLM", False),
                                                  ("ErnieForPreTraining", True)])
def test_ernie_parity(tmp_path, cls_name, use_task_id):
  cfg = ernie_config(use_task_id=use_task_id, task_type_vocab_size=4)
  ref = randomize(getattr(transformers, cls_name)(cfg), seed=5)
  path = save(ref, tmp_path)
  ids, mask, tt = random_batch(7)
  task = np.random.default_rng(1).integers(0, 4, size=ids.shape) if use_task_id else None
  kw = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(tt))
  if use_task_id:
    kw["task_type_ids"] = torch.tensor(task)
  with torch.no_grad():
    out = ref(**kw, output_hidden_states=True)

  model, params = from_hf(path)
  assert model.config.task_type_vocab_size == (4 if use_task_id else 0)
  batch = {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(mask, jnp.int32),
           "token_type_ids": jnp.asarray(tt, jnp.int32)}
  if use_task_id:
    batch["task_type_ids"] = jnp.asarray(task, jnp.int32)
  ours = model.apply({"params": params}, batch, train=False)
  diffs = {"hidden": _max_diff(ours["hidden"], out.hidden_states[-1], mask)}
  if cls_name == "ErnieModel":
    diffs["pooled"] = _max_diff(ours["pooled"], out.pooler_output, np.ones(len(ids)))
    assert "logits" not in ours and "nsp_logits" not in ours
  else:
    logits = out.prediction_logits if cls_name == "ErnieForPreTraining" else out.logits
    diffs["logits"] = _max_diff(ours["logits"], logits, mask)
  if cls_name == "ErnieForPreTraining":
    diffs["nsp"] = _max_diff(ours["nsp_logits"], out.seq_relationship_logits, np.ones(len(ids)))
  print(f"{cls_name} use_task_id={use_task_id}: max abs diff {diffs}")
  assert max(diffs.values()) <= TOL, diffs


def test_task_type_ids_change_the_output(tmp_path):
  """The task embedding is really used: other task ids give other hidden states (and the default,
  no task_type_ids, equals all-zero ids, as in transformers)."""
  path = save(randomize(transformers.ErnieModel(ernie_config(use_task_id=True, task_type_vocab_size=3))), tmp_path)
  model, params = from_hf(path)
  ids = jnp.asarray(random_batch(2, two_segments=False)[0], jnp.int32)
  run = lambda **b: np.asarray(model.apply({"params": params}, {"input_ids": ids, **b})["hidden"])
  zeros, ones = run(task_type_ids=jnp.zeros_like(ids)), run(task_type_ids=jnp.ones_like(ids))
  np.testing.assert_array_equal(run(), zeros)
  assert np.abs(zeros - ones).max() > 1e-2
