"""ULMFiT (Howard & Ruder, 2018): AWD-LSTM LM pretraining -> target-task LM fine-tuning ->
classifier fine-tuning with discriminative LRs, slanted triangular LR and gradual unfreezing.

Stage 1, general-domain LM (tiny: CPU, the built-in synthetic corpus):

    plmjax train --config experiments/ulmfit.py:tiny --workdir /tmp/ulmfit_lm
    plmjax train --config experiments/ulmfit.py:wt2 --workdir /tmp/ulmfit_wt2     # WikiText-2, CPU
    plmjax train --config experiments/ulmfit.py:wt103 --workdir DIR --config.data.path=...

Stage 3, the classifier (`plmjax finetune` with the ulmfit transfer recipe):

    plmjax finetune --config experiments/ulmfit.py:sst2 --workdir /tmp/ulmfit_sst2 \
        --config.model.init_from=/tmp/ulmfit_lm

The SST-2 comparison against a no-pretraining baseline through `plmjax finetune`, from the "wt2" LM:
experiments/rnn_finetune.py. Stage 2 (the target task's text as LM data):
`python experiments/rnn_sst2.py --method ulmfit`.

Paper settings ("wt103"): AWD-LSTM with 400-d embeddings, 3 layers of 1150 / 1150 / 400 cells,
dropouts 0.4 (input), 0.3 (hidden), 0.05 (embedding), 0.5 (weight drop), 0.4 (output); BPTT 70,
batch 64, Adam b1 = 0.7, b2 = 0.99; WikiText-103 with a 60k vocabulary. Classifier: concat pooling
[h_T; max; mean], a 50-unit ReLU layer, base lr 0.01, layer decay 1/2.6, STLR (cut_frac 0.1,
ratio 32), one more layer unfrozen per epoch.
"""
import os

from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.finetune.config import DATA_ROOT, finetune_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "wt2", "wt103", "sst2")
TINY_ARCH = dict(embed_size=32, hidden_size=64, num_layers=3, embed_dropout=0.0, input_dropout=0.1,
                 hidden_dropout=0.1, weight_drop=0.2, output_dropout=0.1)
# "wt2": a small AWD-LSTM on WikiText-2 for CPU budgets (experiments/rnn_finetune.py fine-tunes it)
WT2_ARCH = dict(embed_size=128, hidden_size=256, num_layers=3, embed_dropout=0.02, input_dropout=0.2,
                hidden_dropout=0.15, weight_drop=0.2, output_dropout=0.1)


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"ulmfit config: {arg!r} not in {SIZES}")
  if arg == "sst2":
    return finetune_config(
        "sst2", model={"name": "ulmfit", "arch": dict(TINY_ARCH)},
        head={"pooling": "pooler", "dropout": 0.1}, data={"max_len": 64},
        optimizer={"decay": "stlr", "learning_rate": 1e-2, "b1": 0.7, "b2": 0.99,
                   "weight_decay": 0.0},
        transfer={"layer_decay": 1 / 2.6, "gradual_unfreezing": True})
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "stream"                     # row i continues row i of the previous batch
  c.data.special_tokens = "eos"
  c.objective = ConfigDict(dict(name="rnn_lm"))
  if arg == "tiny":
    c.model = model_section("ulmfit", **TINY_ARCH)
    c.data.seq_len = 32
    c.optimizer = optimizer_section(name="adamw", learning_rate=2e-2, warmup_steps=5,
                                    decay="constant", b1=0.7, b2=0.99, weight_decay=0.0)
    c.train = train_section(steps=100, batch_size=16, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4, clip_norm=0.25)
    return c
  if arg == "wt2":
    c.model = model_section("ulmfit", **WT2_ARCH)
    c.data.path = os.path.join(DATA_ROOT, "wikitext-2")
    c.data.seq_len = 50
    c.optimizer = optimizer_section(name="adamw", learning_rate=3e-3, warmup_steps=20,
                                    decay="constant", b1=0.7, b2=0.99, weight_decay=0.0)
    c.train = train_section(steps=2000, batch_size=32, log_every=50, checkpoint_every=500,
                            eval_every=500, eval_steps=20, clip_norm=0.25)
    return c
  c.model = model_section("ulmfit")
  c.data.seq_len = 70
  c.data.vocab_size = 60000
  c.data.tokenizer_type = "word"
  c.optimizer = optimizer_section(name="adamw", learning_rate=1e-3, warmup_steps=1000,
                                  decay="cosine", b1=0.7, b2=0.99, weight_decay=0.01)
  c.train = train_section(steps=200_000, batch_size=64, log_every=100, checkpoint_every=5000,
                          eval_every=5000, eval_steps=50, clip_norm=0.25)
  return c
