"""Attention heat maps: which source symbols each output symbol attended to.

``draw(path, examples)`` writes one panel per example (rows: output symbols,
columns: source symbols, shade: weight). Characters label the axes when a
font with CJK glyphs is installed (``cjk_font``); otherwise the axes carry
indices, and the caller can say so. Needs matplotlib (``seqjax[plot]``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

# Fonts with CJK glyphs, in order of preference (the family names matplotlib
# reports).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "AR PL UMing CN",
             "AR PL UKai CN", "Droid Sans Fallback", "SimHei",
             "Microsoft YaHei", "PingFang SC", "Heiti SC")


@dataclasses.dataclass
class AttentionExample:
  source: list[str]        # source symbols (S)
  output: list[str]        # emitted symbols (T), the end symbol included
  weights: np.ndarray      # (T, S)

  def to_dict(self) -> dict:
    return {"source": self.source, "output": self.output,
            "weights": np.round(self.weights, 4).tolist()}


def examples_from(sources: list[list[str]], outputs: list[list[str]],
                  weights_NTS: np.ndarray) -> list[AttentionExample]:
  """Each sentence's weights cut to its own output and source lengths."""
  return [AttentionExample(src, out, np.asarray(w)[:len(out), :len(src)])
          for src, out, w in zip(sources, outputs, weights_NTS)]


def cjk_font() -> Optional[str]:
  """The first installed font of ``CJK_FONTS``, or None."""
  from matplotlib import font_manager
  manager = font_manager.fontManager
  found = _first_cjk(manager)
  if found is None:  # installed after matplotlib cached its font list
    for path in font_manager.findSystemFonts():
      if any(k in path.lower() for k in ("cjk", "wqy", "fallback", "ukai",
                                          "uming")):
        manager.addfont(path)
    found = _first_cjk(manager)
  return found


def _first_cjk(manager) -> Optional[str]:
  installed = {f.name for f in manager.ttflist}
  return next((name for name in CJK_FONTS if name in installed), None)


def draw(path: str, examples: list[AttentionExample]) -> Optional[str]:
  """Writes the heat maps to ``path`` (PNG); -> the CJK font used, or None
  when there is none and the axes carry indices."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  font = cjk_font()
  cols = min(len(examples), 2)
  rows = -(-len(examples) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.2 * rows),
                           squeeze=False)
  for ax, ex in zip(axes.flat, examples):
    ax.imshow(ex.weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    labels = font is not None
    ax.set_xticks(range(len(ex.source)))
    ax.set_yticks(range(len(ex.output)))
    ax.set_xticklabels([_shown(c) for c in ex.source] if labels
                       else range(len(ex.source)), fontsize=7,
                       fontfamily=font or "sans-serif")
    ax.set_yticklabels([_shown(c) for c in ex.output] if labels
                       else range(len(ex.output)), fontsize=8,
                       fontfamily=font or "sans-serif")
    ax.set_xlabel("source")
    ax.set_ylabel("output")
  for ax in list(axes.flat)[len(examples):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return font


def _shown(symbol: str) -> str:
  """Whitespace and control symbols made visible on an axis."""
  return {" ": "_", "\n": "</s>", "\t": "<s>"}.get(symbol, symbol)
