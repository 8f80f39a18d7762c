"""ERNIE (THU) starts from a BERT checkpoint through the engine's `train.init_from`, as the paper does:
BERT's first N layers -> the T-Encoder, the next M -> the K-Encoder's token side; the entity side and
the dEA head start fresh and are listed. Sources: a Hugging Face BertForPreTraining folder (random
weights, save_pretrained) and a plmjax BERT run."""
import os

import jax
import numpy as np

from plmjax.knowledge import data as kdata
from plmjax.train import config as config_lib
from plmjax.train.loop import Run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "experiments", "ernie_thu.py") + ":tiny"
ENTITY_SIDE = ("entity_attention", "ln_entity_attention", "ln_entity_mlp", "entity_in", "entity_out")


def _layers(tree):
  return tree["layers"]


def _assert_split(params, bert, n, m):
  """ERNIE's T-Encoder == BERT layers [0, n), K-Encoder token side == [n, n + m), bit for bit."""
  t, k, b = _layers(params["encoder"]), _layers(params["knowledge_encoder"]), _layers(bert["encoder"])
  for path, x in jax.tree_util.tree_leaves_with_path(t):
    y = b
    for p in path:
      y = y[p.key]
    np.testing.assert_array_equal(x, np.asarray(y)[:n], err_msg=jax.tree_util.keystr(path))
  for name in ("attention", "ln_attention", "ln_mlp"):
    for x, y in zip(jax.tree.leaves(k[name]), jax.tree.leaves(b[name])):
      np.testing.assert_array_equal(x, np.asarray(y)[n:n + m])
  for name in ("wi", "wo"):
    for x, y in zip(jax.tree.leaves(k["mlp"][name]), jax.tree.leaves(b["mlp"][name])):
      np.testing.assert_array_equal(x, np.asarray(y)[n:n + m])
  for name in ("token_embed", "position_embed", "type_embed", "embed_ln", "pooler", "mlm_head", "nsp_head"):
    for x, y in zip(jax.tree.leaves(params[name]), jax.tree.leaves(bert[name])):
      np.testing.assert_array_equal(x, y, err_msg=name)


def test_init_from_a_hugging_face_bert_folder_and_a_plmjax_bert_run(tmp_path, capsys):
  from tests.hf_reference import randomize, save, torch, transformers
  from plmjax.convert import from_hf
  from plmjax.convert.run import import_run
  tok = kdata.knowledge_tokenizer(config_lib.get_config(TINY).data)
  hf_cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=4,
                                   num_attention_heads=4, intermediate_size=128, max_position_embeddings=64)
  hf = randomize(transformers.BertForPreTraining(hf_cfg))
  folder = save(hf, tmp_path / "hf")
  tok.backend.save(os.path.join(folder, "tokenizer.json"))
  cfg = config_lib.get_config(TINY, [f"--config.train.init_from={folder}", "--config.train.steps=1"])
  run = Run(cfg, str(tmp_path / "run"))
  assert run.config.model.num_layers == 2 and run.config.model.knowledge_layers == 2   # N, M stay the config's
  fresh = jax.device_get(run.state.params)
  run.init_params()
  got = jax.device_get(run.state.params)
  _, bert = from_hf(folder)
  bert = jax.device_get(bert)
  _assert_split(got, bert, 2, 2)
  new = run.init_report.new
  assert new and all(any(s in n for s in ENTITY_SIDE + ("dea_head",)) for n in new), new
  assert any("dea_head" in n for n in new) and any("entity_in" in n for n in new)
  k_fresh, k_got = _layers(fresh["knowledge_encoder"]), _layers(got["knowledge_encoder"])
  np.testing.assert_array_equal(k_got["mlp"]["entity_in"]["kernel"], k_fresh["mlp"]["entity_in"]["kernel"])
  out = capsys.readouterr().out
  assert "T-Encoder <- BERT layers 0-1, K-Encoder token side <- layers 2-3" in out and "new (fresh init)" in out
  # the T-Encoder computes what HF BERT's first N layers compute (no entity input reaches it)
  rows = np.asarray([tok.encode("the dog sees a cat .") + [tok.pad_id] * 3] * 2, np.int32)
  mask = (rows != tok.pad_id).astype(np.int32)
  batch = {"input_ids": rows, "attention_mask": mask, "token_type_ids": np.zeros_like(rows)}
  ours = jax.jit(lambda p, b: run.model.apply({"params": p}, b, return_hidden_states=True)["hidden_states"][2])(got, batch)
  with torch.no_grad():
    ref = hf.bert(input_ids=torch.tensor(rows, dtype=torch.long), attention_mask=torch.tensor(mask),
                  output_hidden_states=True).hidden_states[2].numpy()
  m = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(ours)[m], ref[m], atol=1e-4, rtol=1e-4)
  # the same BERT as a plmjax run (`plmjax convert HF_DIR RUN_DIR`) loads the same way
  bert_run = import_run(folder, str(tmp_path / "bert_run"))
  run.state = run.state.replace(params=jax.device_put(fresh, run.shardings.params))
  run.load_params_into(bert_run, "train.init_from")
  _assert_split(jax.device_get(run.state.params), bert, 2, 2)
  assert run.init_report.new == new
  run.checkpointer.close()
