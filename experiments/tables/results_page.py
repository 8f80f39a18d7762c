"""Writing a study's results page: results/NAME.md (the table the command measured) and results/NAME.png
(its plot). Every script under experiments/tables/ writes through these two functions."""
from __future__ import annotations

import os
from typing import Sequence


def write_markdown(out: str, name: str, lines: Sequence[str]) -> str:
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, f"{name}.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return path


def line_plot(out: str, name: str, series: dict, *, xlabel: str, ylabel: str, title: str,
              vline: tuple | None = None) -> str:
  """series: {label: (xs, ys)}; vline: (x, label) drawn dotted. Writes OUT/NAME.png."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.2))
  for label, (xs, ys) in series.items():
    ax.plot(xs, ys, "o-" if len(xs) < 20 else "-", label=label)
  if vline is not None:
    ax.axvline(vline[0], color="grey", ls=":", label=vline[1])
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  path = os.path.join(out, f"{name}.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
