"""SiATL (Chronopoulou et al., 2019): a pretrained LSTM LM, then a task LSTM with self-attention
trained with an auxiliary LM loss of exponentially decaying weight and sequential unfreezing.

LM pretraining (tiny: CPU, the built-in synthetic corpus):

    plmjax train --config experiments/siatl.py:tiny --workdir /tmp/siatl_lm

Transfer through `plmjax finetune` (task LSTM + self-attention, head.lm_coef = gamma_0 with
head.lm_coef_decay / head.lm_decay_every, gradual unfreezing); a SiATL LM run gets its classifier
layers added, a ULMFiT LM run is wrapped with model.wrap=siatl:

    plmjax finetune --config experiments/rnn_finetune.py:siatl --workdir /tmp/siatl_sst2 \
        --config.model.init_from=/tmp/siatl_lm --config.model.wrap= --config.model.arch.task_hidden=16

The SST-2 comparison against a no-pretraining baseline: experiments/rnn_finetune.py.

Paper-scale setting ("paper"; as we read the paper): word embeddings 400, a 2-layer LSTM LM of 1000
cells pretrained on ~20M tweets with Adam; transfer adds an LSTM with self-attention; L = L_task +
gamma L_LM with gamma decaying exponentially per epoch; unfreezing: new layers, then the pretrained
LSTM, then the embedding.
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "paper")


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"siatl config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "packed"
  c.data.special_tokens = "eos"
  c.objective = ConfigDict(dict(name="rnn_lm"))
  if arg == "tiny":
    c.model = model_section("siatl", classifier=False, embed_size=64, hidden_size=128, num_layers=2,
                            embed_dropout=0.0, input_dropout=0.1, hidden_dropout=0.1,
                            output_dropout=0.1, task_hidden=16)
    c.data.seq_len = 32
    c.optimizer = optimizer_section(name="adamw", learning_rate=2e-2, warmup_steps=5,
                                    decay="constant", weight_decay=0.0)
    c.train = train_section(steps=100, batch_size=16, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  c.model = model_section("siatl", classifier=False)
  c.data.seq_len = 50
  c.data.vocab_size = 50000
  c.data.tokenizer_type = "word"
  c.optimizer = optimizer_section(name="adamw", learning_rate=1e-3, warmup_steps=1000,
                                  decay="linear", weight_decay=0.0)
  c.train = train_section(steps=200_000, batch_size=128, log_every=100, checkpoint_every=5000,
                          eval_every=5000, eval_steps=50, clip_norm=1.0)
  return c
