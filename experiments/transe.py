"""TransE (Bordes et al., 2013) over a triple file: the entity vectors ERNIE (THU) reads (100-d, L1).

    plmjax transe --config experiments/transe.py:synthetic --out /tmp/transe_synthetic
    plmjax transe --config experiments/transe.py:wt2 --out /tmp/transe_wt2
    plmjax transe --config experiments/transe.py:synthetic --out /tmp/t --config.triples=facts.tsv

`synthetic`: the generated knowledge graph over the built-in corpus (plmjax/knowledge/synthetic_kg.py);
`wt2`: the facts of the WikiText-2 linker (plmjax/knowledge/kg.py). 10 % of the triples are held out
for filtered link prediction (MR, MRR, Hits@1/10, next to a random ranking).
"""
from ml_collections import ConfigDict

from plmjax.knowledge import kg

PRESETS = {"synthetic": ("kg:synthetic", kg.TRANSE_SYNTHETIC),
           "wt2": ("kg:../shared/data/wikitext-2", kg.TRANSE_TEXT)}


def get_config(arg: str = "synthetic") -> ConfigDict:
  if arg not in PRESETS:
    raise ValueError(f"transe config: {arg!r} not in {sorted(PRESETS)}")
  triples, t = PRESETS[arg]
  return ConfigDict(dict(triples=triples, held_out=kg.HELD_OUT, dim=t.dim, norm=t.norm, margin=t.margin,
                         negatives=t.negatives, batch_size=t.batch_size, steps=t.steps,
                         learning_rate=t.learning_rate, seed=t.seed))
