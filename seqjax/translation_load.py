"""Trained translation models read back from their workdirs: the records
(the checkpoint's model config, vocab.json), the parameters a run hands
back (its best checkpoint's, else the latest's; their moving average where
kept), one model (``load_translator``) or several decoded as one
(``load_ensemble``), each member checked against the first before any
parameters are read. ``seqjax.translation`` names these too.
"""

from __future__ import annotations

import os
from typing import Optional

import jax

from seqjax import decoding
from seqjax.best_checkpoint import BestCheckpoint
from seqjax.checkpoint import OPTIMIZER_STRUCTURE, Checkpointer
from seqjax.data import vocab_file
from seqjax.errors import ParameterError
from seqjax.models import Seq2Seq
from seqjax.translation import (TASK, ModelNotFoundError, ModelSpec,
                                Translator, build_model, decodes_tokens,
                                model_config)


def saved_model_config(workdir: str) -> Optional[dict]:
  """The model config the latest checkpoint in ``workdir`` records; None
  without a checkpoint."""
  if not os.path.isdir(workdir):
    return None
  checkpointer = Checkpointer(workdir, {})
  try:
    return checkpointer.saved_config()
  finally:
    checkpointer.close()


def load_records(workdir: str) -> tuple[dict, vocab_file.VocabFile]:
  """-> (the checkpoint's model config, vocab.json) of the translation model
  trained in ``workdir``. Raises ParameterError naming the task of another
  task's model, ModelNotFoundError without a checkpoint or vocab.json."""
  saved = saved_model_config(workdir)
  if saved is not None and saved.get("task") != TASK:
    raise ParameterError("workdir", workdir, f"holds a {saved.get('task')!r} "
                         "model (that task's checkpoint), not a translation "
                         "model")
  vocabs = vocab_file.load_vocab_file(workdir) if saved else None
  if saved is None or vocabs is None:
    missing = ("no checkpoint" if saved is None else
               f"a checkpoint but no {vocab_file.VOCAB_FILE}")
    raise ModelNotFoundError("workdir", workdir, missing)
  return saved, vocabs


def load_translator(workdir: str, strategy=decoding.Greedy(),
                    n_best: int = 0, key: Optional[jax.Array] = None
                    ) -> Translator:
  """The translation model trained in ``workdir``: its checkpoint's settings
  and the parameters it hands back (its best checkpoint's, else the
  latest's; their moving average where the run kept one), its vocab.json,
  decoding by ``strategy`` (with ``n_best``, also the N best; sampling
  draws with ``key``). Raises ModelNotFoundError
  without both, ParameterError for another task's model and
  CheckpointMismatchError when vocab.json is not the checkpoint's."""
  saved, vocabs = load_records(workdir)
  spec, model, params, step = restore_model(workdir, saved, vocabs)
  return Translator(spec, model, params, vocabs, step, strategy, n_best, key)


def restore_model(workdir: str, saved: dict, vocabs: vocab_file.VocabFile):
  """-> (spec, model, parameters, step) of the model ``load_records`` read
  in ``workdir``."""
  spec = ModelSpec.from_model_config(saved)
  model = build_model(spec, vocabs.source, vocabs.target)
  # Compared with the checkpoint's: a vocab.json not its own is refused.
  # The optimizer's structure does not matter here: only parameters load.
  expected = {**model_config(spec, vocabs.source, vocabs.target,
                             saved["optimizer"]),
              **{k: saved[k] for k in OPTIMIZER_STRUCTURE if k in saved}}
  params, step = _restore_params(workdir, expected, param_shapes(model))
  return spec, model, params, int(step)


# ---------------------------------------------------------------- ensembles

def load_member_records(workdir: str, first: tuple, first_workdir: str,
                        same_data: bool = False) -> tuple:
  """-> ``load_records(workdir)`` of an ensemble member, checked against
  ``first``, the records of ``first_workdir``'s model: the same source and
  target vocabularies (vocab.json fingerprints), the same decoding (fed its
  tokens or its softmax, at most as many steps) and, with ``same_data``, the
  same training data (an evaluation must not score a member on its
  training sentences). Reads only the records (no parameters); raises
  ParameterError (or ModelNotFoundError) naming ``ensemble`` and
  ``workdir``."""
  try:
    saved, vocabs = load_records(workdir)
  except ParameterError as e:
    raise type(e)("ensemble", workdir, e.problem) from e
  problems = _member_problems((saved, vocabs), first, first_workdir,
                              same_data)
  if problems:
    raise ParameterError("ensemble", workdir, "; ".join(problems) + ": "
                         "ensemble members must agree")
  return saved, vocabs


def _member_problems(member: tuple, first: tuple, first_workdir: str,
                     same_data: bool) -> list[str]:
  """How a member's (model config, vocab.json) differ from ``first``'s."""
  (saved, vocabs), (first_saved, first_vocabs) = member, first
  problems = []
  for side in ("source", "target"):
    mine, theirs = (getattr(v, side).fingerprint()
                    for v in (vocabs, first_vocabs))
    if mine != theirs:
      problems.append(f"its {side} vocabulary (fingerprint {mine}) is not "
                      f"that of {first_workdir} ({theirs})")
  feeds = ["its tokens" if decodes_tokens(ModelSpec.from_model_config(c))
           else "its softmax" for c in (saved, first_saved)]
  if feeds[0] != feeds[1]:
    problems.append(f"it is decoded fed {feeds[0]}, the model of "
                    f"{first_workdir} {feeds[1]}")
  if vocabs.max_decode_len != first_vocabs.max_decode_len:
    problems.append(f"it decodes at most {vocabs.max_decode_len} steps, the "
                    f"model of {first_workdir} {first_vocabs.max_decode_len}")
  if same_data and vocabs.data != first_vocabs.data:
    problems.append(f"it was trained on other data ({vocabs.data}) than the "
                    f"model of {first_workdir} ({first_vocabs.data})")
  return problems


def load_ensemble(workdirs, strategy=decoding.Greedy(), n_best: int = 0,
                  key: Optional[jax.Array] = None) -> Translator:
  """The translation models trained in ``workdirs`` decoded as one
  (``decoding.Ensemble``: their log-probabilities averaged every step),
  with the first's vocabularies and step. Every record is read and checked
  (``load_member_records``) before any parameters are restored; nothing is
  written."""
  first = load_records(workdirs[0])
  records = [first] + [load_member_records(w, first, workdirs[0])
                       for w in workdirs[1:]]
  members = [restore_model(w, *r) for w, r in zip(workdirs, records)]
  spec, _, _, step = members[0]
  model = decoding.Ensemble(tuple(m[1] for m in members))
  params = decoding.ensemble_params([m[2] for m in members])
  return Translator(spec, model, params, first[1], step, strategy, n_best,
                    key)


def param_shapes(model: Seq2Seq):
  """The shapes and dtypes of ``model``'s parameters, traced, never
  computed: a restore fills them, so nothing is initialised or compiled."""
  def init():
    tokens = jax.numpy.zeros((1, 1), "int32")
    return model.init(jax.random.key(0), tokens, tokens)
  return jax.eval_shape(init)


def _restore_params(workdir: str, expected: dict, shapes):
  """-> (parameters, step) of the model a run hands back: the best
  checkpoint (``<workdir>/best``, kept by --keep_best; best.json's step
  where it keeps several) where there is one, else the latest, and of it
  the parameters' moving average where it holds one (--ema_decay); read on
  the host into ``shapes``' tree and put on the device at once (no program
  runs to place them)."""
  best = BestCheckpoint(workdir, expected, keep=None)  # read only
  best_step = best.step()
  if best_step is None:
    best.close()
    checkpointer = Checkpointer(workdir, expected)
  else:
    checkpointer = best.checkpointer
  try:
    step = checkpointer.check_compatible()
    step = step if best_step is None else best_step
    key = "ema" if checkpointer.has_ema(step) else "params"
    return jax.device_put(checkpointer.restore_host_params(shapes, step,
                                                           key)), step
  finally:
    checkpointer.close()
