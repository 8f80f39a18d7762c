"""experiments/rnn_sst2.py end to end at toy size: the three ULMFiT stages (general-domain LM on
WikiText-2 -> LM fine-tuning on SST-2's text -> classifier) and the no-pretraining baseline run,
and stage 2 starts from the stage-1 weights (its first loss is already well below log V, where a
fresh LM starts) and keeps falling."""
import importlib.util
import json
import math
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")


@pytest.mark.skipif(not os.path.isdir(DATA), reason="../shared/data not present")
def test_ulmfit_three_stages_run_and_stage2_starts_pretrained(tmp_path):
  spec = importlib.util.spec_from_file_location("rnn_sst2", os.path.join(ROOT, "experiments", "rnn_sst2.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  out = tmp_path / "out.json"
  vocab = 500
  mod.main(["--method", "ulmfit", "--data", DATA, "--vocab", str(vocab), "--embed", "16",
            "--hidden", "32", "--pretrain-steps", "60", "--lm-finetune-steps", "40",
            "--cls-steps", "5", "--train-examples", "256", "--batch", "8", "--bptt", "20",
            "--cache", str(tmp_path / "lm.pkl"), "--out", str(out)])
  r = json.loads(out.read_text())
  pre, ft = r["pretrain_curve"], r["ulmfit"]["lm_finetune_curve"]
  assert pre[-1][1] < pre[0][1] - 0.2                        # stage 1 learns
  assert ft[0][1] < math.log(vocab) - 0.2                    # stage 2 starts from stage 1's weights
  assert ft[-1][1] < ft[0][1]                                # and learns the target domain
  for name in ("ulmfit", "ulmfit_baseline"):
    assert 0.0 <= r[name]["dev_accuracy"] <= 1.0 and len(r[name]["curve"]) == 5
