"""Inference with trained translation models: translating sentences (given,
or one a line of a stream) and scoring source-reference pairs, with
``config`` a translation run's settings (``seqjax.translate_runs``)."""

from __future__ import annotations

import contextlib
import json
import sys

from absl import logging

from seqjax import translation
from seqjax import translation_load
from seqjax.errors import ParameterError


def load_model(config, purpose: str) -> translation.Translator:
  """The model in ``config.workdir`` (ensembled with
  ``config.ensemble_workdirs()``), for ``purpose`` (translate, score)."""
  settings = (config.search(), config.n_best if config.n_best > 1 else 0,
              config.decoding_key())
  members = config.ensemble_workdirs()
  try:
    return (translation_load.load_ensemble([config.workdir, *members], *settings)
            if members else
            translation_load.load_translator(config.workdir, *settings))
  except translation.ModelNotFoundError as e:
    raise ParameterError(e.param, e.value, f"{e.problem}; a trained model "
                         f"is needed ({purpose})", mentions=(purpose,)) from e


def score_pairs(config, out=None) -> dict:
  """Each pair of ``config.score``'s file's log-probability under the
  model in ``config.workdir``, one JSON line a pair (its line number, the
  pair, log_prob, tokens, token_log_probs, unknown, truncated) to
  ``config.score_output`` or ``out`` (default standard output); notes go to
  standard error. A bad line stops the run before the model is read."""
  pairs = translation.read_scored_pairs(config.score)
  translator = load_model(config, "score")
  try:
    scored = translator.score(pairs, config.eval_batch_size)
  except ParameterError as e:
    raise ParameterError("score", config.score, e.problem) from e
  try:
    with (open(config.score_output, "w", encoding="utf-8")
          if config.score_output else contextlib.nullcontext(
              out or sys.stdout)) as f:
      for n, s in enumerate(scored, start=1):
        f.write(json.dumps({"line": n, **s.to_dict()}, ensure_ascii=False)
                + "\n")
  except (OSError, ValueError) as e:
    raise ParameterError("score_output", config.score_output,
                         f"cannot be written: {e}") from e
  total = sum(s.log_prob for s in scored)
  print(f"Scored {len(scored)} pairs of {config.score} with the checkpoint "
        f"at step {translator.step}: total log-probability {total:.4f}",
        file=sys.stderr)
  return {"scored": len(scored), "log_prob": total}


def translate_sentences(config) -> dict:
  """The model in ``config.workdir`` translates ``config.translate``
  (["-"]: standard input, one sentence a line)."""
  translator = load_model(config, "translate")
  members = config.ensemble_workdirs()
  if config.translate == ["-"]:
    return translate_stream(translator, sys.stdin, sys.stdout, sys.stderr)
  print(f"Resumed from the checkpoint at step {translator.step} in "
        f"{config.workdir}" + (f", ensembled with {', '.join(members)}"
                               if members else "") + ".")
  width = translator.vocabs.max_source_len
  out = []
  for t in translator.translate(config.translate):
    if t.truncated:
      logging.warning("A sentence was truncated to %d %ss, the longest "
                      "training source; dropped %r", width,
                      translator.vocabs.source.level, t.dropped)
    print(f"-\nInput sentence: {t.input}\nDecoded sentence: {t.decoded}")
    for n, (text, score) in enumerate(t.n_best or [], start=1):
      print(f"  {n}. {score:9.4f}  {text}")
    for note in translation_notes(t, translator.vocabs):
      print(note)
    out.append({"input": t.input, "decoded": t.decoded, "unknown": t.unknown,
                "truncated": t.truncated,
                **({"n_best": t.n_best} if t.n_best else {})})
  return {"translations": out, "decoder": config.describe_search(),
          **({"ensemble": [config.workdir, *members]} if members else {})}


def translation_notes(t: translation.Translation, vocabs) -> list[str]:
  """The notes printed under a translation: what was truncated, which
  symbols were unknown."""
  notes = []
  if t.truncated:
    notes.append(f"(truncated to the first {vocabs.max_source_len} "
                 f"{vocabs.source.level}s, the longest training source; "
                 f"dropped {t.dropped!r})")
  if t.unknown:
    notes.append(f"(translated with the unknown symbol in place of "
                 f"{', '.join(repr(u) for u in dict.fromkeys(t.unknown))}: "
                 "not in the training vocabulary)")
  return notes


def translate_stream(translator, lines, out, err=None) -> dict:
  """One translation a line of ``lines``, written (and flushed) to ``out``
  as each is decoded; a blank line gives a blank line. The notes of a line
  (truncated, unknown symbols) go to ``err``, named by its line number, so
  ``out`` holds the translations alone. Every line is padded to the
  longest training source: one compiled shape."""
  width = translator.vocabs.max_source_len or 0
  count = 0
  for line in lines:
    sentence = line.rstrip("\r\n")
    count += 1
    text = ""
    if sentence.strip():
      t = translator.translate([sentence], width=width or None)[0]
      text = t.decoded
      for note in translation_notes(t, translator.vocabs) if err else ():
        err.write(f"line {count}: {note}\n")
    out.write(text + "\n")
    out.flush()
  return {"translated_lines": count}
