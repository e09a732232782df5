"""A ``Seq2Seq``'s architecture settings as one value, and its checkpoint
record.

``ModelSettings`` is what ``seqjax.models.Seq2Seq`` is built from (its
``settings`` attribute), what a binary's flags fill once, and, as a plain
dict (``record``), what a translation checkpoint stores under
``"architecture"``. ``upgrade_record`` maps the flat translation records
of older checkpoints to that form, so their workdirs still load.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

RECORD_KEY = "architecture"


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """The settings that make a ``Seq2Seq`` (the tutorial's model by default,
  with the Keras translation example's 256 units).

  Attributes:
    units: recurrent units of encoder and decoder (each direction).
    cell: "lstm" or "gru".
    embedding_dim: None feeds tokens as one-hot (a kernel row lookup); an int
      puts an Embedding of that width in front of encoder and decoder.
    encoder_layers, decoder_layers: stacked recurrent layers.
    bidirectional: a backward layer beside each encoder layer, started at
      each sentence's last real token; their outputs are concatenated.
    attention: "none", "bahdanau" or "luong" (``seqjax.attention``), with
      ``attention_score`` (a name in ``attention.SCORES``) for Luong (
      Bahdanau's is additive), and ``input_feeding`` (Luong: the
      attentional state is an input of the next decoder step).
    dropout: rate on embeddings, between layers and before the readout,
      applied only when the call is given a "dropout" rng (training).
  """

  units: int = 256
  cell: str = "lstm"
  embedding_dim: Optional[int] = None
  encoder_layers: int = 1
  decoder_layers: int = 1
  bidirectional: bool = False
  attention: str = "none"
  attention_score: str = "general"
  input_feeding: bool = True
  dropout: float = 0.0

  def record(self) -> dict:
    """The plain dict a checkpoint stores: what the parameters depend on.
    The dropout rate shapes training only (a run may resume with another);
    Luong's score and feeding are recorded as their defaults for other
    attentions, which ignore them."""
    kept = self
    if self.attention != "luong":
      kept = dataclasses.replace(self, attention_score="general",
                                 input_feeding=True)
    saved = dataclasses.asdict(kept)
    del saved["dropout"]
    return saved

  @classmethod
  def from_record(cls, saved: dict) -> "ModelSettings":
    return cls(**saved)


# An older translation record's name of a field (its flags' name); its
# other architecture keys had the fields' names (those beyond the Keras
# model's written only when not their defaults).
_OLD_NAMES = {"latent_dim": "units"}


def upgrade_record(saved: dict) -> dict:
  """A checkpoint's record in today's form: an older translation record's
  flat architecture keys moved into ``record()``'s dict; any other record
  unchanged."""
  if saved.get("task") != "translate" or RECORD_KEY in saved:
    return saved
  names = {f.name for f in dataclasses.fields(ModelSettings)}
  moved = {k for k in saved if _OLD_NAMES.get(k, k) in names}
  settings = ModelSettings(**{_OLD_NAMES.get(k, k): saved[k] for k in moved})
  rest = {k: v for k, v in saved.items() if k not in moved}
  return {**rest, RECORD_KEY: settings.record()}
