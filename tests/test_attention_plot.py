"""Attention heat maps: every symbol a font can draw labels its axis, the
others their index; each panel has a title and a colour scale."""

import numpy as np
import pytest

from seqjax import attention_plot

pytest.importorskip("matplotlib")


def test_symbols_without_a_glyph_show_their_index():
  glyphs = {ord(c) for c in "helo.<>/s_"}
  labels = attention_plot.axis_labels(["hello", "你", ".", "\n", " "], glyphs)
  assert labels == ["hello", "#1", ".", "</s>", "_"]


def test_english_is_drawn_whatever_cjk_font_there_is():
  glyphs = attention_plot._glyphs([attention_plot._DEFAULT_FAMILY])
  assert attention_plot.axis_labels(["tom", "is", "happy", "!"], glyphs) == [
      "tom", "is", "happy", "!"]
  # DejaVu Sans has no CJK ideographs: an index, never an empty box.
  assert attention_plot.axis_labels(["汤"], glyphs) == ["#0"]


def test_each_panel_has_a_title_and_a_colour_scale(tmp_path, monkeypatch):
  import matplotlib.pyplot as plt
  figures = []
  monkeypatch.setattr(plt, "close", figures.append)
  rng = np.random.default_rng(0)
  examples = [attention_plot.AttentionExample(
      ["tom", "ran", "."], ["汤", "跑", "\n"], rng.dirichlet(np.ones(3), 3))
      for _ in range(3)]
  attention_plot.draw(str(tmp_path / "a.png"), examples)
  assert (tmp_path / "a.png").stat().st_size > 0
  fig, = figures
  panels = [ax for ax in fig.axes if ax.get_images()]
  assert len(panels) == 3
  assert [ax.get_title(loc="left") for ax in panels] == [
      f"{i}: tom ran ." for i in (1, 2, 3)]
  assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 3
  assert [t.get_text() for t in panels[0].get_xticklabels()] == [
      "tom", "ran", "."]
