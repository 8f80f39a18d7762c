"""Export to Hugging Face and run folders (`plmjax convert`), fp32:

* tiny plmjax runs exported with `plmjax convert RUN HF_DIR` load in transformers' `from_pretrained`
  with logits within 1e-4 of plmjax's on the same input, and their tokenizer loads in AutoTokenizer
  with plmjax's ids. BERT's run is trained 2 steps by `train_and_evaluate`; the other families'
  runs are RUN/config.json + RUN/checkpoints/0/state (what restore_params reads) with every
  parameter drawn from N(0, 0.2^2), so that a swapped or dropped LayerNorm / bias shows (a 2-step
  run barely moves them from ones / zeros), at a fraction of the cost of compiling a train step
  per family;
* HF -> plmjax -> HF gives back every tensor bit for bit (all families);
* HF -> plmjax run folder -> `plmjax eval`, `load_plmjax`, and back to HF, tensors identical.
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.hf_reference import (SMALL, bert_config, gpt1_config, gpt2_config, random_batch, randomize,
                                roberta_config, save, torch, transformers)
from tests.test_ernie_parity import ernie_config
from tests.test_txl_parity import txl_module  # noqa: F401  (fixture)
from plmjax import cli
from plmjax.convert import CheckpointError, from_hf, to_hf
from plmjax.convert.hf import REGISTRY_NAME
from plmjax.finetune.encoder import load_plmjax, plmjax_tokenizer
from plmjax.train.config import get_config
from plmjax.train.loop import train_and_evaluate

TOL = 1e-4
WIKITEXT2 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "wikitext-2")
FAST = ["--config.train.steps=2", "--config.train.batch_size=4", "--config.train.log_every=1",
        "--config.train.checkpoint_every=2", "--config.train.eval_steps=0",
        "--config.data.synthetic.num_docs=200", "--config.data.synthetic.eval_docs=20"]
SMALL_BERT = ["--config.model.hidden_size=32", "--config.model.mlp_dim=64", "--config.model.num_heads=4"]

# experiment, extra overrides, transformers class
RUNS = {
    "bert": ("bert", [], "BertForPreTraining"),
    "roberta": ("roberta", [], "RobertaForMaskedLM"),
    "spanbert": ("spanbert", SMALL_BERT, "BertForMaskedLM"),
    "ernie1": ("ernie1", SMALL_BERT + ["--config.model.task_type_vocab_size=3"], "ErnieForPreTraining"),
    "gpt1": ("gpt1", ["--config.model.mlp_dim=128"], "OpenAIGPTLMHeadModel"),
    "gpt2": ("gpt2", [], "GPT2LMHeadModel"),
    # (cutoffs > 0 cannot build a train state today: nn/adaptive.py's cluster_weight names the
    # logical axis "table" twice; the adaptive-softmax mapping is covered by the round trips below)
    "transformer_xl": ("transformer_xl", ["--config.model.embed_size=16"], "TransfoXLLMHeadModel"),
    "xlnet": ("xlnet", [], "XLNetLMHeadModel"),
}


def _train(workdir, name, extra):
  cfg = get_config(f"experiments/{name}.py:tiny", FAST + extra)
  if name == "bert":
    train_and_evaluate(cfg, str(workdir))
    return cfg
  from plmjax.data.sources import corpus_tokenizer
  from plmjax.train.config import build_model
  module, _ = build_model(cfg.model, corpus_tokenizer(cfg.data), "float32")
  params = jax.eval_shape(lambda: module.init(jax.random.key(0), {"input_ids": jnp.zeros((2, 4), jnp.int32)}))
  leaves, tree = jax.tree.flatten(nn.meta.unbox(params["params"]))
  rng = np.random.default_rng(0)
  params = jax.tree.unflatten(tree, [(0.2 * rng.standard_normal(x.shape)).astype(np.float32) for x in leaves])
  os.makedirs(workdir / "checkpoints")
  (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
  saver = ocp.StandardCheckpointer()
  saver.save(str(workdir / "checkpoints" / "0" / "state"), {"params": params})
  saver.wait_until_finished()
  return cfg


def _max_diff(ours, theirs):
  ours, theirs = np.asarray(ours), theirs.detach().numpy()
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  return float(np.abs(ours - theirs).max())


@pytest.mark.parametrize("case", sorted(RUNS))
def test_trained_run_exports_to_transformers(tmp_path, case, request):
  name, extra, cls_name = RUNS[case]
  if case == "transformer_xl":
    request.getfixturevalue("txl_module")
  run, hf_dir = tmp_path / "run", tmp_path / "hf"
  if case == "gpt2":       # a sentencepiece BPE vocabulary, as a run on a real corpus trains
    from plmjax.data.tokenizer import train_sentencepiece
    lines = [ln.strip() for ln in open(os.path.join(WIKITEXT2, "train.txt"), encoding="utf-8") if ln.strip()]
    train_sentencepiece(lines[:300], str(tmp_path / "sp"), 200, "bpe")
    extra = extra + [f"--config.data.tokenizer={tmp_path / 'sp.model'}"]
  cfg = _train(run, name, extra)
  assert cli.main(["convert", str(run), str(hf_dir)]) == 0
  hf_config = json.loads((hf_dir / "config.json").read_text())
  assert hf_config["architectures"] == [cls_name]

  tokenizer = plmjax_tokenizer(str(run))
  module, params = load_plmjax(str(run), tokenizer)
  ref = getattr(transformers, cls_name).from_pretrained(str(hf_dir)).eval()
  ids, mask, tt = random_batch(3, vocab=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
  ids[:, 0] = tokenizer.cls_id if tokenizer.cls_id is not None else ids[:, 0]
  batch = {"input_ids": jnp.asarray(ids, jnp.int32)}
  kw = {"input_ids": torch.tensor(ids)}
  if name in ("bert", "roberta", "spanbert", "ernie1"):
    batch["attention_mask"], kw["attention_mask"] = jnp.asarray(mask, jnp.int32), torch.tensor(mask)
    if cfg.model.type_vocab_size > 1:
      batch["token_type_ids"], kw["token_type_ids"] = jnp.asarray(tt, jnp.int32), torch.tensor(tt)
  if name == "ernie1":
    task = np.random.default_rng(0).integers(0, 3, size=ids.shape)
    batch["task_type_ids"], kw["task_type_ids"] = jnp.asarray(task, jnp.int32), torch.tensor(task)
  ours = module.apply({"params": params}, batch, train=False)
  with torch.no_grad():
    out = ref(**kw)
  diffs = {}
  if name == "transformer_xl":
    diffs["logits"] = _max_diff(ours["logits"], out.prediction_scores)
    with torch.no_grad():                       # a second segment over the memories
      out2 = ref(input_ids=torch.tensor(ids), mems=out.mems)
    ours2 = module.apply({"params": params}, {**batch, "mems": ours["mems"]}, train=False)
    diffs["logits (segment 2)"] = _max_diff(ours2["logits"], out2.prediction_scores)
  elif cls_name.endswith("ForPreTraining"):
    diffs["logits"] = _max_diff(ours["logits"], out.prediction_logits)
    diffs["nsp"] = _max_diff(ours["nsp_logits"], out.seq_relationship_logits)
  else:
    m = mask.astype(bool)[..., None] if "attention_mask" in batch else True
    diffs["logits"] = _max_diff(np.where(m, ours["logits"], 0), out.logits * torch.tensor(m))
  print(f"{case} -> {cls_name}: max abs diff {diffs}")
  assert max(diffs.values()) <= TOL, diffs

  if case == "bert":        # one checkpoint of the run, named by its step folder: the same export
    step = str(run / "checkpoints" / "2")
    assert cli.main(["convert", step, str(tmp_path / "hf_step")]) == 0
    from safetensors.numpy import load_file
    a, b = load_file(str(hf_dir / "model.safetensors")), load_file(str(tmp_path / "hf_step" / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)

  # the tokenizer goes along: AutoTokenizer reads it and encodes text to plmjax's ids
  auto = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
  text = "the cat sat on the mat"
  assert auto(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)
  assert auto.pad_token_id == tokenizer.pad_id
  if case == "gpt2":
    assert (hf_dir / "spiece.model").is_file()


ROUND_TRIPS = {
    "bert_pretraining": lambda: transformers.BertForPreTraining(bert_config()),
    "bert_model": lambda: transformers.BertModel(bert_config()),
    "roberta_mlm": lambda: transformers.RobertaForMaskedLM(roberta_config()),
    "ernie_task_id": lambda: transformers.ErnieForPreTraining(ernie_config(use_task_id=True)),
    "ernie_mlm": lambda: transformers.ErnieForMaskedLM(ernie_config()),
    "openai_gpt": lambda: transformers.OpenAIGPTLMHeadModel(gpt1_config()),
    "gpt2": lambda: transformers.GPT2LMHeadModel(gpt2_config()),
    "xlnet": lambda: transformers.XLNetLMHeadModel(transformers.XLNetConfig(
        vocab_size=80, d_model=32, n_layer=2, n_head=4, d_inner=64, mem_len=8)),
    "transfo_xl_adaptive": lambda: transformers.TransfoXLLMHeadModel(transformers.TransfoXLConfig(
        vocab_size=60, d_model=32, n_head=4, d_head=8, d_inner=64, n_layer=2, cutoffs=[10, 30],
        d_embed=32, div_val=2, mem_len=6)),
    "transfo_xl_shared_r": lambda: transformers.TransfoXLLMHeadModel(transformers.TransfoXLConfig(
        vocab_size=60, d_model=32, n_head=4, d_head=8, d_inner=64, n_layer=2, cutoffs=[20],
        d_embed=16, div_val=1, untie_r=False, pre_lnorm=True, mem_len=4)),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_hf_round_trip_is_exact(tmp_path, case):
  ref = randomize(ROUND_TRIPS[case](), seed=2)
  src = save(ref, tmp_path / "src", safe=case != "transfo_xl_shared_r")
  module, params = from_hf(src)
  name = REGISTRY_NAME[ref.config.model_type]
  to_hf(name, module.config, params, str(tmp_path / "out"))
  back = type(ref).from_pretrained(str(tmp_path / "out")).eval()
  want, got = ref.state_dict(), back.state_dict()
  assert sorted(want) == sorted(got)
  differ = [k for k in want if not torch.equal(want[k], got[k])]
  assert not differ, differ
  # and the exported file holds every tensor of the original file (tied copies may be added)
  from safetensors.numpy import load_file
  out = load_file(str(tmp_path / "out" / "model.safetensors"))
  if os.path.isfile(os.path.join(src, "model.safetensors")):
    orig = load_file(os.path.join(src, "model.safetensors"))
    orig.pop("transformer.pos_emb.inv_freq", None)   # Transformer-XL's constant buffer, rebuilt by HF
    assert set(orig) <= set(out), sorted(set(orig) - set(out))
    assert all(np.array_equal(orig[k], out[k]) for k in orig)


def test_unrolled_layers_export_the_same(tmp_path):
  """A model with scan_layers=False (layers_0, layers_1, ...) exports the same tensors."""
  ref = randomize(transformers.GPT2LMHeadModel(gpt2_config()), seed=6)
  src = save(ref, tmp_path / "src")
  module, params = from_hf(src, scan_layers=False)
  assert "layers_1" in params["decoder"]
  to_hf("gpt2", module.config, params, str(tmp_path / "out"))
  back = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "out"))
  assert all(torch.equal(v, back.state_dict()[k]) for k, v in ref.state_dict().items())


def _wordpiece_folder(path, vocab_size):
  """A WordPiece vocab.txt of exactly `vocab_size` tokens (BERT's specials first)."""
  words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat"]
  words += [f"w{i}" for i in range(vocab_size - len(words))]
  os.makedirs(path, exist_ok=True)
  (path / "vocab.txt").write_text("\n".join(words) + "\n")


def test_hf_folder_to_run_and_back(tmp_path, capsys):
  from plmjax.data import synthetic
  words = synthetic.grammar().vocab()      # a vocab.txt that covers the corpus `plmjax eval` reads
  s = dict(SMALL, vocab=len(words))
  ref = randomize(transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
      num_attention_heads=s["heads"], intermediate_size=s["mlp"], max_position_embeddings=s["positions"])),
      seed=4)
  src = tmp_path / "hf"
  save(ref, src)
  (src / "vocab.txt").write_text("\n".join(words) + "\n")
  (src / "tokenizer_config.json").write_text('{"do_lower_case": false}')
  run = tmp_path / "run"
  assert cli.main(["convert", str(src), str(run)]) == 0
  assert (run / "checkpoints" / "0" / "state").is_dir()

  # load_plmjax rebuilds the model from the run's config and tokenizer: same outputs as from_hf
  tokenizer = plmjax_tokenizer(str(run))
  assert tokenizer.vocab_size == ref.config.vocab_size
  module, params = load_plmjax(str(run), tokenizer)
  direct, direct_params = from_hf(str(src))
  ids, mask, tt = random_batch(5, vocab=len(words))
  batch = {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(mask, jnp.int32),
           "token_type_ids": jnp.asarray(tt, jnp.int32)}
  np.testing.assert_array_equal(module.apply({"params": params}, batch)["logits"],
                                direct.apply({"params": direct_params}, batch)["logits"])

  # plmjax eval takes the run (its own config.py)
  capsys.readouterr()
  assert cli.main(["eval", "--config", str(run / "config.py"), "--workdir", str(run),
                   "--config.train.eval_steps=1", "--config.train.batch_size=4",
                   "--config.data.synthetic.num_docs=200", "--config.data.synthetic.eval_docs=20"]) == 0
  metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert metrics["step"] == 0 and np.isfinite(metrics["loss"])

  # and back to HF: every tensor as it was
  back_dir = tmp_path / "back"
  assert cli.main(["convert", str(run), str(back_dir)]) == 0
  back = transformers.BertForPreTraining.from_pretrained(str(back_dir))
  want, got = ref.state_dict(), back.state_dict()
  assert [k for k in want if not torch.equal(want[k], got[k])] == []


def test_hf_folder_without_matching_tokenizer_is_refused(tmp_path):
  src = tmp_path / "hf"
  save(randomize(transformers.BertForMaskedLM(bert_config())), src)
  with pytest.raises(SystemExit, match="plmjax convert: .*no tokenizer"):
    cli.main(["convert", str(src), str(tmp_path / "run")])
  _wordpiece_folder(src, 50)
  with pytest.raises(SystemExit, match="50 ids but the model's vocab_size is 120"):
    cli.main(["convert", str(src), str(tmp_path / "run2")])
  with pytest.raises(SystemExit, match="neither a plmjax run .* nor a Hugging Face"):
    cli.main(["convert", str(tmp_path / "nothing"), str(tmp_path / "run3")])


def test_export_refuses_what_hf_cannot_hold(tmp_path):
  from plmjax.models.gpt import GPT, gpt1
  module_cfg = gpt1(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=48, max_len=8)
  params = GPT(module_cfg).init(jax.random.key(0), {"input_ids": jnp.zeros((1, 4), jnp.int32)})
  params = nn.meta.unbox(params["params"])
  with pytest.raises(CheckpointError, match="mlp_dim=48 must be 4 \\* hidden_size"):
    to_hf("gpt1", module_cfg, params, str(tmp_path / "out"))
  with pytest.raises(CheckpointError, match="no Hugging Face export"):
    to_hf("elmo", module_cfg, params, str(tmp_path / "out"))
  extra = {**params, "surprise": {"kernel": np.zeros((2, 2), np.float32)}}
  with pytest.raises(CheckpointError, match="unexpected surprise/kernel"):
    to_hf("gpt1", module_cfg, extra, str(tmp_path / "out"))
  with pytest.raises(CheckpointError, match=r"mlp/wi/kernel: \(1, 16, 48\) vs model \(1, 16, 64\)"):
    to_hf("gpt1", module_cfg.replace(mlp_dim=64), params, str(tmp_path / "out"))


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_sentencepiece_tokenizer_exports_to_autotokenizer(tmp_path, kind):
  """A run's sentencepiece model (as `plmjax train` trains it on a real corpus) -> tokenizer.json:
  AutoTokenizer gives sentencepiece's ids on WikiText-2 text. Known differences, excluded here:
  text spelling the named special tokens ([CLS] [SEP] [MASK]: AutoTokenizer maps them to their ids)
  and, for BPE, text that starts with a user-defined symbol or with whitespace (no leading lone
  "▁" piece / an extra one)."""
  from plmjax.convert.tokenizer import write_tokenizer
  from plmjax.data.tokenizer import train_sentencepiece
  wt2 = WIKITEXT2
  read = lambda split, n: [ln.strip() for ln in open(os.path.join(wt2, f"{split}.txt"), encoding="utf-8")
                           if ln.strip()][:n]
  tok = train_sentencepiece(read("train", 400), str(tmp_path / "sp"), 300, kind,
                            user_defined_symbols=("<unk>",))
  write_tokenizer(tok, str(tmp_path / "hf"))
  auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  lines = [ln for ln in read("valid", 300) + ["naïve café ｆｕｌｌ width", "  two   spaces  ", "x<unk>y", "a <unk>"]
           if not (kind == "bpe" and (ln.startswith("<unk>") or ln[:1].isspace()))]
  differ = [ln for ln in lines if auto(ln, add_special_tokens=False)["input_ids"] != tok.encode(ln)]
  assert len(lines) > 200 and not differ, differ[:3]
  assert (auto.pad_token_id, auto.mask_token_id, auto.cls_token_id) == (tok.pad_id, tok.mask_id, tok.cls_id)
  assert auto.decode(tok.encode("the game began")) == "the game began"
