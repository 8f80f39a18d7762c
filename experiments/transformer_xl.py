"""Transformer-XL (Dai et al., 2019): relative-position causal LM with segment-level recurrence,
adaptive input / softmax.

Run (tiny: CPU, about a minute; real text with --config.data.path):

    plmjax train --config experiments/transformer_xl.py:tiny --workdir /tmp/txl_tiny
    plmjax train --config experiments/transformer_xl.py:tiny --workdir /tmp/txl_wt2 \
        --config.data.path=../shared/data/wikitext-2

Data are "stream" rows (row i of each batch continues row i of the previous one), and the train
step carries the memory across optimizer steps in `TrainState.model_state["mems"]`, as the
authors' scripts do. Evaluation (in-run and `plmjax eval`) carries it across eval batches too, with
the `eval` section's tgt_len / mem_len / clamp_len / same_length (None = as in training;
`--config.eval.mem_len=0` scores each segment alone; `--config.train.eval_steps=-1` the whole split):

    plmjax eval --config experiments/transformer_xl.py:tiny --workdir /tmp/txl_wt2 \
        --config.data.path=../shared/data/wikitext-2 --config.eval.mem_len=64 --config.train.eval_steps=-1 Each row holds 4 segments of `model.segment_len` tokens, which the model runs
in one `lax.scan` threading the memory (stop-gradient between segments).

Settings (from the authors' run_*.sh scripts, PyTorch version):
  wt103_base   16 layers, d 410, 10 heads x 41, d_inner 2100, dropout 0.1, dropatt 0.0, adaptive
               softmax (cutoffs 20k/40k/200k, div_val 1), tgt_len = mem_len = 150, batch 60,
               Adam lr 2.5e-4 cosine to 0 over 200k steps; eval tgt_len 64, mem_len 640,
               clamp_len 400, same_length.
  wt103_large  18 layers, d 1024, 16 heads x 64, d_inner 4096, dropout 0.2, dropatt 0.2,
               div_val 4, tgt_len = mem_len = 384, batch 128, lr 2.5e-4, 16k warmup, 4M steps;
               eval tgt_len 128, mem_len 1600, clamp_len 1000, same_length.
  enwik8_base  12 layers, d 512, 8 heads x 64, d_inner 2048, dropout 0.1, byte vocabulary, plain
               softmax, tgt_len = mem_len = 512, batch 22, lr 2.5e-4, 400k steps; eval tgt_len
               80, mem_len 2100, clamp_len 820, same_length.
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import (eval_section, mesh_section, model_section, optimizer_section,
                                 train_section)

SIZES = ("tiny", "wt103_base", "wt103_large", "enwik8_base")

_PAPER = {
    "wt103_base": dict(
        model=dict(hidden_size=410, num_layers=16, num_heads=10, head_size=41, mlp_dim=2100,
                   dropout_rate=0.1, attention_dropout_rate=0.0, cutoffs=(20000, 40000, 200000),
                   div_val=1, segment_len=150, mem_len=150, clamp_len=-1, same_length=False),
        vocab=267735, tokenizer="word", batch=60, steps=200_000, warmup=0,
        eval=dict(tgt_len=64, mem_len=640, clamp_len=400, same_length=True)),
    "wt103_large": dict(
        model=dict(hidden_size=1024, num_layers=18, num_heads=16, head_size=64, mlp_dim=4096,
                   dropout_rate=0.2, attention_dropout_rate=0.2, cutoffs=(20000, 40000, 200000),
                   div_val=4, segment_len=384, mem_len=384, clamp_len=-1, same_length=False),
        vocab=267735, tokenizer="word", batch=128, steps=4_000_000, warmup=16_000,
        eval=dict(tgt_len=128, mem_len=1600, clamp_len=1000, same_length=True)),
    "enwik8_base": dict(
        model=dict(hidden_size=512, num_layers=12, num_heads=8, head_size=64, mlp_dim=2048,
                   dropout_rate=0.1, attention_dropout_rate=0.0, cutoffs=(), div_val=1,
                   segment_len=512, mem_len=512, clamp_len=-1, same_length=False),
        vocab=204, tokenizer="char", batch=22, steps=400_000, warmup=0,
        eval=dict(tgt_len=80, mem_len=2100, clamp_len=820, same_length=True)),
}


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"transformer_xl config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "stream"
  c.data.special_tokens = "eos"
  c.objective = default_objective_config("clm")
  if arg == "tiny":
    c.model = model_section("transformer_xl", hidden_size=32, num_layers=2, num_heads=4,
                            mlp_dim=64, cutoffs=(), div_val=1, segment_len=16, mem_len=16,
                            clamp_len=-1, same_length=False, dropout_rate=0.1)
    c.data.seq_len = 64                    # 4 segments of 16 per row
    c.optimizer = optimizer_section(name="adamw", learning_rate=2e-3, warmup_steps=10,
                                    decay="cosine", weight_decay=0.0)
    c.train = train_section(steps=100, batch_size=16, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    c.eval = eval_section()                # evaluation memory as in training (override to vary)
    return c
  p = _PAPER[arg]
  c.model = model_section("transformer_xl", **p["model"])
  c.data.seq_len = 4 * p["model"]["segment_len"]
  c.data.vocab_size = p["vocab"]
  c.data.tokenizer_type = p["tokenizer"]
  c.optimizer = optimizer_section(name="adamw", learning_rate=2.5e-4, warmup_steps=p["warmup"],
                                  decay="cosine", end_lr=0.0, weight_decay=0.0, eps=1e-8)
  c.train = train_section(steps=p["steps"], batch_size=p["batch"], log_every=200,
                          checkpoint_every=4000, eval_every=4000, eval_steps=50, clip_norm=0.25)
  c.eval = eval_section(**p["eval"])       # the authors' evaluation: longer memory, clamped
  return c
