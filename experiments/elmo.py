"""ELMo (Peters et al., 2018): a character-CNN biLM of two separate directional LSTM LMs.

Run (tiny: CPU, the built-in synthetic corpus):

    plmjax train --config experiments/elmo.py:tiny --workdir /tmp/elmo_tiny

Sizes: "tiny" (small char CNN over the synthetic vocabulary's pieces, 2 x LSTM 64 -> 32);
"original" is the paper's model (bilm-tf options): characters 50 per token, 16-d character
embeddings, filters (1,32) (2,32) (3,64) (4,128) (5,256) (6,512) (7,1024), 2 highway layers, a
512-d projection, 2 LSTM layers of 4096 cells projected to 512 with cell / projection clipping at 3
and a residual connection between them, dropout 0.1; 10 epochs of the 1B Word Benchmark with batch
128 x 20 tokens per direction (Adagrad lr 0.2 in the original; Adam here). The original softmax is
sampled over 793k words; ours is a full softmax over the data's vocabulary, and `model.char_vocab`
must hold the tokenizer's token strings (the tiny config fills it from the synthetic vocabulary).

Objective "bilm" (plmjax.objectives.bilm): the mean of the forward and backward LM losses.
Downstream: the L + 1 layers through a learned scalar mix (`plmjax finetune ... :features`).
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config, synthetic
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "original")


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"elmo config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "packed"
  c.data.special_tokens = "none"
  c.objective = ConfigDict(dict(name="bilm"))
  if arg == "tiny":
    c.model = model_section("elmo", char_vocab=tuple(synthetic.grammar().vocab()), max_chars=8,
                            char_dim=8, filters=((1, 16), (2, 16), (3, 32)), num_highway=1,
                            proj_size=32, hidden_size=64, num_layers=2, dropout_rate=0.0)
    c.data.seq_len = 32
    c.optimizer = optimizer_section(name="adamw", learning_rate=2e-2, warmup_steps=5,
                                    decay="constant", weight_decay=0.0)
    c.train = train_section(steps=100, batch_size=16, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  c.model = model_section("elmo")
  c.data.seq_len = 20
  c.optimizer = optimizer_section(name="adamw", learning_rate=1e-3, warmup_steps=1000,
                                  decay="linear", weight_decay=0.0)
  c.train = train_section(steps=500_000, batch_size=128, log_every=100, checkpoint_every=5000,
                          eval_every=5000, eval_steps=50, clip_norm=10.0)
  return c
