"""ERNIE (THU) (Zhang et al., 2019): BERT's T-Encoder + a knowledge K-Encoder fed with frozen TransE
entity vectors; pre-trained with masked LM + next-sentence prediction + dEA (plmjax/models/ernie_thu.py,
plmjax/objectives/dea.py, knowledge sources in plmjax/knowledge/).

Run (tiny: CPU, under a minute; the generated knowledge graph over the built-in corpus, no data argument):

    plmjax train --config experiments/ernie_thu.py:tiny --workdir /tmp/ernie_thu_tiny
    plmjax train --config experiments/ernie_thu.py:wt2 --workdir /tmp/ernie_thu_wt2

`wt2`: WikiText-2 with the linker of plmjax/knowledge/kg.py (article titles and frequent capitalised
names, facts from the article structure), TransE trained over those facts on first use.
`base`: the paper's model: N = 6 T-Encoder and M = 6 K-Encoder layers at BERT-base width
(H = 768, A = 12), entity vectors 100-d (4 heads), length 256, batch 512 in the paper (here 256),
lr 5e-5, one epoch of Wikipedia. For `base` set `--config.data.path`, `--config.model.entity_vectors`
and `--config.objective.knowledge` to one knowledge source (kg:PATH). The source is built and its
TransE trained when the run starts, not when the config loads.

Starting from BERT, as the paper does (any size; `--config.train.init_from` = a Hugging Face BERT
folder or a plmjax BERT run):

    plmjax train --config experiments/ernie_thu.py:base --config.train.init_from=path/to/bert-base-uncased ...
    plmjax train --config experiments/ernie_thu.py:tiny --config.train.init_from=runs/bert_on_kg --workdir DIR

The registry's init adapter (plmjax.models.ernie_thu.adapt_checkpoint) maps BERT's layers 0..N-1 to
the T-Encoder and N..N+M-1 to the K-Encoder's token side (attention, LayerNorms, mlp wi / wo;
BERT-base's 12 = 6 + 6); embeddings, pooler, MLM and NSP heads load as they are; the entity side
and the dEA head start fresh and are listed in the log. A BERT with fewer than N + M layers leaves
the K-Encoder fresh; one with fewer than N is refused. With a Hugging Face folder the widths come
from the checkpoint, N and M stay this config's, and the tokenizer is the folder's (it must hold
the markers [HD], [TL], [ENT]; BERT's vocab.txt does not, so add them as tokens).
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.knowledge.data import MARKERS
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "wt2", "base")
WT2 = "kg:../shared/data/wikitext-2"


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"ernie_thu config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "pairs"
  c.data.special_tokens = "cls_sep"
  c.objective = default_objective_config("ernie_dea")
  if arg in ("tiny", "wt2"):
    spec = "kg:synthetic" if arg == "tiny" else WT2
    c.data.path = spec
    seq = 64 if arg == "tiny" else 128
    c.data.seq_len = seq
    if arg == "wt2":
      c.data.vocab_size = 8000
      c.data.tokenizer_symbols = ("<unk>",) + MARKERS
    c.model = model_section("ernie_thu", hidden_size=64, num_layers=2, knowledge_layers=2, num_heads=4,
                            mlp_dim=128, max_len=seq, entity_dim=100, entity_heads=4, entity_vectors=spec,
                            dropout_rate=0.0, attention_dropout_rate=0.0)
    c.objective.max_predictions = 10 if arg == "tiny" else 20
    c.objective.max_entities = 12 if arg == "tiny" else 24
    c.objective.knowledge = spec       # its entity count bounds dEA's random replacements
    c.optimizer = optimizer_section(name="adamw", learning_rate=2e-3, warmup_steps=10)
    steps = 100 if arg == "tiny" else 600
    c.train = train_section(steps=steps, batch_size=32, log_every=10, checkpoint_every=steps,
                            eval_every=steps // 2, eval_steps=4)
    return c
  c.data.path = ""                       # set to kg:PATH (see the docstring)
  c.data.seq_len = 256
  c.data.vocab_size = 30522
  c.data.tokenizer_symbols = ("<unk>",) + MARKERS
  c.model = model_section("ernie_thu", num_layers=6, knowledge_layers=6, entity_dim=100, entity_heads=4,
                          max_len=512)
  c.objective.max_predictions = 40
  c.objective.max_entities = 32
  c.optimizer = optimizer_section(name="adamw", learning_rate=5e-5, warmup_steps=1000, decay="linear",
                                  weight_decay=0.01)
  c.train = train_section(steps=100_000, batch_size=256, log_every=100, checkpoint_every=5_000,
                          eval_every=5_000, eval_steps=50, clip_norm=1.0)
  return c
