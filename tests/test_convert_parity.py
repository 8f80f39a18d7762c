"""Parity of imported Hugging Face checkpoints with transformers (PyTorch), fp32, random weights:
hidden states and logits at non-padding positions within 1e-4."""
import jax.numpy as jnp
import numpy as np
import pytest

from tests.hf_reference import (bert_config, gpt1_config, gpt2_config, random_batch, randomize,
                                roberta_config, save, torch, transformers)
from plmjax.convert import CheckpointError, from_hf

TOL = 1e-4


def _compare(ours, theirs, mask):
  ours, theirs = np.asarray(ours), theirs.detach().numpy()
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  diff = np.abs(ours - theirs)[mask.astype(bool)]
  assert diff.max() <= TOL, f"max abs diff {diff.max():.3g}"
  return diff.max()


def _run_ours(path, ids, mask, tt=None, **kw):
  model, params = from_hf(path, **kw)
  batch = {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(mask, jnp.int32)}
  if tt is not None:
    batch["token_type_ids"] = jnp.asarray(tt, jnp.int32)
  return model, model.apply({"params": params}, batch, train=False)


BERT_CASES = [("BertModel", bert_config), ("BertForMaskedLM", bert_config),
              ("BertForPreTraining", bert_config), ("RobertaModel", roberta_config),
              ("RobertaForMaskedLM", roberta_config)]


@pytest.mark.parametrize("cls_name,make_config", BERT_CASES)
def test_bert_family_parity(tmp_path, cls_name, make_config):
  ref = randomize(getattr(transformers, cls_name)(make_config()))
  path = save(ref, tmp_path)
  roberta = "Roberta" in cls_name
  ids, mask, tt = random_batch(1, pad_id=1 if roberta else 0, two_segments=not roberta)
  with torch.no_grad():
    out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
              token_type_ids=torch.tensor(tt), output_hidden_states=True)
  model, ours = _run_ours(path, ids, mask, tt)
  _compare(ours["hidden"], out.hidden_states[-1], mask)
  if cls_name.endswith("Model"):
    _compare(ours["pooled"], out.pooler_output, np.ones(len(ids)))
    assert "logits" not in ours
  else:
    logits = out.prediction_logits if cls_name == "BertForPreTraining" else out.logits
    _compare(ours["logits"], logits, mask)
  if cls_name == "BertForPreTraining":
    _compare(ours["nsp_logits"], out.seq_relationship_logits, np.ones(len(ids)))


@pytest.mark.parametrize("cls_name,make_config", [("OpenAIGPTLMHeadModel", gpt1_config),
                                                  ("GPT2LMHeadModel", gpt2_config)])
def test_gpt_family_parity(tmp_path, cls_name, make_config):
  ref = randomize(getattr(transformers, cls_name)(make_config()))
  path = save(ref, tmp_path)
  ids, mask, tt = random_batch(2)
  with torch.no_grad():
    out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
              token_type_ids=torch.tensor(tt), output_hidden_states=True)
  _, ours = _run_ours(path, ids, mask, tt)
  _compare(ours["hidden"], out.hidden_states[-1], mask)
  _compare(ours["logits"], out.logits, mask)


def test_pytorch_bin_checkpoint(tmp_path):
  ref = randomize(transformers.BertForMaskedLM(bert_config()))
  path = save(ref, tmp_path, safe=False)
  ids, mask, tt = random_batch(3)
  with torch.no_grad():
    out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(tt))
  _, ours = _run_ours(path, ids, mask, tt)
  _compare(ours["logits"], out.logits, mask)


def test_unrolled_import_matches_scanned(tmp_path):
  path = save(randomize(transformers.GPT2LMHeadModel(gpt2_config())), tmp_path)
  ids, mask, _ = random_batch(4)
  _, scanned = _run_ours(path, ids, mask)
  _, unrolled = _run_ours(path, ids, mask, scan_layers=False)
  np.testing.assert_allclose(scanned["logits"], unrolled["logits"], atol=1e-5)


def test_mismatched_checkpoint_lists_every_problem(tmp_path):
  from safetensors.numpy import load_file, save_file
  path = save(randomize(transformers.BertModel(bert_config())), tmp_path)
  state = load_file(f"{path}/model.safetensors")
  del state["encoder.layer.1.output.dense.weight"]
  del state["pooler.dense.bias"]
  state["encoder.layer.0.intermediate.dense.weight"] = np.zeros((7, 32), np.float32)
  state["encoder.layer.0.surprise.weight"] = np.zeros((2,), np.float32)
  save_file(state, f"{path}/model.safetensors")
  with pytest.raises(CheckpointError) as e:
    from_hf(path)
  msg = str(e.value)
  for needle in ["encoder.layer.1.output.dense.weight", "pooler.dense.bias",
                 "encoder.layer.0.surprise.weight", "mlp/wi/kernel"]:
    assert needle in msg, msg


def test_unsupported_model_type_is_named(tmp_path):
  (tmp_path / "config.json").write_text('{"model_type": "t5"}')
  with pytest.raises(CheckpointError, match="t5"):
    from_hf(str(tmp_path))
