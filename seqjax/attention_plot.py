"""Attention heat maps: which source symbols each output symbol attended to.

``draw(path, examples)`` writes one panel per example (rows: output symbols,
columns: source symbols, shade: weight, with a colour scale; the source
sentence as the title). Every symbol an installed font can draw labels its
row or column: English always, Chinese where a font with CJK glyphs is
installed (``cjk_font``); a symbol no font can draw shows its index
(``#3``), and the caller can say so. Needs matplotlib (``seqjax[plot]``).
"""

from __future__ import annotations

import dataclasses
import logging
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
  when there is none (then symbols no installed font can draw carry their
  index)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  # A .ttc family lacks a "normal" weight entry: matplotlib warns per label.
  logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
  font = cjk_font()
  families = ([font] if font else []) + [_DEFAULT_FAMILY]
  glyphs = _glyphs(families)
  cols = min(len(examples), 2)
  rows = -(-len(examples) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 3.4 * rows),
                           squeeze=False)
  for i, (ax, ex) in enumerate(zip(axes.flat, examples), start=1):
    image = ax.imshow(ex.weights, cmap="Greys", vmin=0.0, vmax=1.0,
                      aspect="auto")
    ax.set_xticks(range(len(ex.source)))
    ax.set_yticks(range(len(ex.output)))
    ax.set_xticklabels(axis_labels(ex.source, glyphs), fontsize=7,
                       fontfamily=families, rotation=45,
                       ha="right")
    ax.set_yticklabels(axis_labels(ex.output, glyphs), fontsize=8,
                       fontfamily=families)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(f"{i}: " + " ".join(axis_labels(ex.source, glyphs)),
                 fontsize=8, fontfamily=families, loc="left")
    fig.colorbar(image, ax=ax, label="attention weight", fraction=0.04)
  for ax in list(axes.flat)[len(examples):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return font


_DEFAULT_FAMILY = "DejaVu Sans"   # matplotlib's own, always installed


def _glyphs(families: list[str]) -> set[int]:
  """The code points some font of ``families`` can draw."""
  from matplotlib import font_manager, ft2font
  points = set()
  for family in families:
    path = font_manager.findfont(font_manager.FontProperties(family=family))
    points.update(ft2font.FT2Font(path).get_charmap())
  return points


def axis_labels(symbols: list[str], glyphs: set[int]) -> list[str]:
  """Each symbol as drawn (``_shown``), or its index where some character
  of it has no glyph in ``glyphs``: an axis never shows empty boxes."""
  shown = [_shown(s) for s in symbols]
  return [s if all(ord(c) in glyphs for c in s) else f"#{i}"
          for i, s in enumerate(shown)]


def _shown(symbol: str) -> str:
  """Whitespace and control symbols made visible on an axis."""
  return {" ": "_", "\n": "</s>", "\t": "<s>"}.get(symbol, symbol)
