"""ULMFiT and SiATL on SST-2 through `plmjax finetune`, each beside a no-pretraining baseline with the
same network, data, optimizer and step budget.

    # 1. the general-domain LM (AWD-LSTM 128 / 256 / 256 / 128, WikiText-2, 2,000 steps on a CPU)
    plmjax train --config experiments/ulmfit.py:wt2 --workdir runs/ulmfit_wt2
    # 2. the four SST-2 runs (dev accuracy in DIR/eval.json)
    plmjax finetune --config experiments/rnn_finetune.py:ulmfit --workdir runs/sst2_ulmfit
    plmjax finetune --config experiments/rnn_finetune.py:ulmfit_baseline --workdir runs/sst2_ulmfit_baseline
    plmjax finetune --config experiments/rnn_finetune.py:siatl --workdir runs/sst2_siatl
    plmjax finetune --config experiments/rnn_finetune.py:siatl_baseline --workdir runs/sst2_siatl_baseline

`model.init_from` (the pretrained runs) and `data.tokenizer` (the baselines: the LM run's vocabulary,
no weights) default to LM = runs/ulmfit_wt2; override either on the command line.

    ulmfit            the AWD-LSTM LM + ULMFiT's classifier (concat pooling [h_T; max; mean] -> 50-unit
                      ReLU -> dropout -> dense); discriminative LRs (1/2.6 per layer), slanted
                      triangular LR, gradual unfreezing (one more layer every STEPS / (L + 2) steps)
    siatl             the same LM inside SiATL (model.wrap = "siatl": a new task LSTM with
                      self-attention), L = L_task + 0.2 * 0.5^n L_LM with n = step // (STEPS / 4)
                      (head.lm_coef_decay), sequential unfreezing (gradual unfreezing, top first)
    <method>_baseline the same network randomly initialised (model.name + model.arch = the LM's
                      architecture), the same loss; one learning rate and no unfreezing (freezing
                      random layers would only handicap it)

All runs: SST-2's 67,349 training sentences, dev = 872, max_len 64, batch 32, STEPS = 1,000
classifier steps (about half an epoch; `rnn_finetune.py:ulmfit:4000` for 4,000), Adam (b1 0.7, b2 0.99) with STLR peaking at 5e-3, gradient
clipping 0.25. Optional stage 2 of ULMFiT (LM fine-tuning on the task's text) is not part of these
runs; experiments/rnn_sst2.py has it.

Measured (2 shared CPU cores; LM: 2,000 steps, 12 min, WikiText-2 validation loss 4.38), SST-2 dev
accuracy, seed 0 (README.md has the table with wall times and a second seed):

                                                              1,000 steps   3,000 steps
    ulmfit                                                       0.637         0.697
    ulmfit_baseline                                              0.803         0.815
    ulmfit, transfer.layer_decay=1, gradual_unfreezing=False     0.812         0.823
    siatl                                                        0.720         0.764
    siatl_baseline                                               0.733         0.809
    siatl, transfer.gradual_unfreezing=False                     0.806

The pretrained weights help once every layer trains at the full rate from the first step; the
papers' schedules (ULMFiT's 1/2.6 per layer and unfreezing, SiATL's sequential unfreezing) keep
the network near an LM that is too weak at this budget and cost 9-18 points.
"""
import os

from plmjax.finetune.config import finetune_config

LM = os.path.join("runs", "ulmfit_wt2")
STEPS = 1000
NUM_LAYERS = 3
ARCH = dict(embed_size=128, hidden_size=256, num_layers=NUM_LAYERS, embed_dropout=0.02,
            input_dropout=0.2, hidden_dropout=0.15, weight_drop=0.2, output_dropout=0.1)   # ulmfit.py:wt2
SIATL_TASK = dict(task_hidden=128, task_dropout=0.3)
METHODS = ("ulmfit", "ulmfit_baseline", "siatl", "siatl_baseline")


def get_config(arg: str = "ulmfit"):
  """arg: METHOD or METHOD:STEPS (the budget; unfreezing and the aux-loss decay scale with it)."""
  arg, _, steps = arg.partition(":")
  if arg not in METHODS or not (steps == "" or steps.isdigit() and int(steps) > 0):
    raise ValueError(f"experiments/rnn_finetune.py: {arg!r}:{steps!r}: expected one of {METHODS}, "
                     "optionally :STEPS")
  steps = int(steps or STEPS)
  method, baseline = arg.split("_")[0], arg.endswith("_baseline")
  sections = dict(
      data={"max_len": 64, "tokenizer": LM if baseline else ""},
      train={"steps": steps, "batch_size": 32, "eval_batch_size": 64, "log_every": 50,
             "clip_norm": 0.25},
      head={"pooling": "pooler", "dropout": 0.1},
      optimizer={"decay": "stlr", "learning_rate": 5e-3, "b1": 0.7, "b2": 0.99,
                 "weight_decay": 0.0},
      transfer={"layer_decay": 1.0, "gradual_unfreezing": not baseline,
                "unfreeze_every": max(steps // (NUM_LAYERS + 2), 1)})
  if method == "ulmfit":
    extra = {"classifier_hidden": 50}
    sections["model"] = {"name": "ulmfit", "arch": {**ARCH, **extra} if baseline else extra}
    if not baseline:
      sections["transfer"]["layer_decay"] = 1 / 2.6
  else:
    sections["model"] = ({"name": "siatl", "arch": {**ARCH, **SIATL_TASK}} if baseline else
                         {"name": "siatl", "arch": dict(SIATL_TASK), "wrap": "siatl"})
    sections["head"].update(lm_coef=0.2, lm_coef_decay=0.5, lm_decay_every=max(steps // 4, 1))
  sections["model"]["init_from"] = "" if baseline else LM
  return finetune_config("sst2", **sections)
