"""UNILM (Dong et al., 2019): one shared Transformer, four language models through attention masks.

Each row of a batch is trained as a bidirectional (1/3), left-to-right (1/6), right-to-left (1/6)
or sequence-to-sequence (1/3) masked LM, chosen per row on device; the mode sets the row's [T, T]
self-attention mask and its segment embeddings (plmjax/objectives/unilm.py). Rows are sentence
pairs [CLS] S1 [SEP] S2 [SEP]. `tiny`: S2 always continues S1 (random_next_prob = 0) and there is
no NSP. `large`, as in the paper: NSP on the bidirectional rows, half of the pairs with a random S2
(objective.nsp_weight = 1, model.nsp_head = True).

Run (tiny: CPU, about a minute):

    plmjax train --config experiments/unilm.py:tiny --workdir /tmp/unilm_tiny
    plmjax train --config experiments/unilm.py:tiny --workdir /tmp/unilm_wt2 \\
        --config.data.path=../shared/data/wikitext-2

`s2s_tiny`: seq2seq fine-tuning ("unilm_s2s": seq2seq mask on every row, 70 % of the target tokens
masked, the closing [SEP] included); generate with plmjax.decode.sample / beam_search over
`PrefixLMDecoding(model, mask_id)` (greedy and beam search with a KV cache).

`large`: the paper's pre-training: BERT-large-sized (initialised from BERT-large), length 512, batch
330, 770k steps, Adam (lr 3e-5, b2 0.999, weight decay 0.01, 40k warmup, linear decay), dropout
0.1; 15 % masking, 80/10/10, a bigram or trigram instead of one token 20 % of the time (span units
with span_p = 0.8, span_max_words = 3).
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "s2s_tiny", "large")


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"unilm config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "pairs"
  c.data.special_tokens = "cls_sep"
  c.data.random_next_prob = 0.0
  c.objective = default_objective_config("unilm_s2s" if arg == "s2s_tiny" else "unilm")
  # CPU-sized; no dropout, 1-step warmup, width 128 and batch 256 (tiny) so that 80 steps show learning
  # (tests/test_masking_configs_learn.py; at width 64 / batch 64 the loss fell 8-14 %, not 20 %)
  if arg in ("tiny", "s2s_tiny"):
    width = 128 if arg == "tiny" else 64
    c.model = model_section("unilm", hidden_size=width, num_layers=2, num_heads=4, mlp_dim=2 * width,
                            dropout_rate=0.0, attention_dropout_rate=0.0, max_len=32)
    c.data.seq_len = 32
    c.objective.max_predictions = 8 if arg == "tiny" else 16
    c.optimizer = optimizer_section(name="adamw", learning_rate=3e-3, warmup_steps=1)
    c.train = train_section(steps=100, batch_size=256 if arg == "tiny" else 64, log_every=10,
                            checkpoint_every=50, eval_every=50, eval_steps=4)
    return c
  c.model = model_section("unilm", nsp_head=True)      # NSP on the bidirectional rows
  c.objective.nsp_weight = 1.0
  c.data.random_next_prob = 0.5
  c.data.seq_len = 512
  c.data.vocab_size = 28996
  c.objective.max_predictions = 88
  c.objective.unit = "span"
  c.objective.span_p = 0.8
  c.objective.span_max_words = 3
  c.optimizer = optimizer_section(name="adamw", learning_rate=3e-5, warmup_steps=40_000, decay="linear",
                                  b1=0.9, b2=0.999, weight_decay=0.01)
  c.train = train_section(steps=770_000, batch_size=330, log_every=100, checkpoint_every=10_000,
                          eval_every=10_000, eval_steps=50, clip_norm=1.0)
  return c
