"""A translation run's setup and final evaluation (the translate task's
``setup`` and ``evaluate``), with ``config`` a translation run's settings
(``seqjax.translate_runs``).

Every epoch decodes the selection set (dev, or the tail split's val;
greedy by default); the final evaluation decodes every held-out set by the
run's search, with the members of ``config.ensemble`` where named, prints
examples and scores, and draws the attention of the selection set.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import numpy as np
from absl import logging

from seqjax import decoding
from seqjax import evaluate as evaluate_lib
from seqjax import task as task_lib
from seqjax import train as train_lib
from seqjax import translation
from seqjax import translation_load
from seqjax.data import script as script_lib
from seqjax.data import translation as data_lib
from seqjax.data import vocab_file
from seqjax.errors import SeqjaxError
from seqjax.translate_runs import (check_trained_data, data_settings,
                                   model_spec, prepare_data)


@dataclasses.dataclass
class Evaluation:
  """What the final evaluation needs beside the state."""

  data: data_lib.TranslationData
  held_out: evaluate_lib.HeldOutLoss   # the epoch-end evaluation (dev or val)
  eval_step: object
  decoder: object
  workdir: str
  member_params: tuple = ()  # the ensemble's other models'
  # The ensemble's loss (teacher forced, the members' mean probabilities).
  ensemble_eval_step: object = None

  def decoder_params(self, params):
    """What ``decoder`` decodes with: ``params``, with the members'."""
    if not self.member_params:
      return params
    return decoding.ensemble_params([params, *self.member_params])


def setup(config, workdir: str) -> task_lib.Setup:
  """The data, the model and its loss, and the evaluations of a run."""
  restored = (vocab_file.load_vocab_file(workdir) if os.path.isdir(workdir)
              else None)
  check_trained_data(config, restored, workdir)
  data = prepare_data(config, restored)
  print(data.describe(malformed_note="strict=True stops at the first"))
  beam_errors = config.beam_errors(len(data.tgt_vocab))
  if beam_errors:  # before any training
    raise SeqjaxError("; ".join(beam_errors))
  spec = model_spec(config)
  model = translation.build_model(spec, data.src_vocab, data.tgt_vocab)
  loss_fn = translation.make_loss(spec, model, config.seed)
  # Runs of steps_per_call batches of one bucket fill each jitted call.
  fit_data, plan = data.fit_data(config.batch_size, config.steps_per_call)
  eval_step = train_lib.make_eval_step(loss_fn)
  members = [translation_load.restore_model(w, *translation_load.load_records(w))
             for w in config.ensemble_workdirs()]
  decoder, dev_decoder, ensemble_eval_step = _decoders(
      config, spec, model, [m[1] for m in members], data.max_decode_len)
  selection = data.selection
  held_out = evaluate_lib.HeldOutLoss(
      eval_step, data_lib.fit_arrays(selection.loss_arrays),
      config.eval_batch_size, config.epochs, decoder=dev_decoder,
      held_out=selection, tgt_vocab=data.tgt_vocab)
  save = None if restored else functools.partial(
      vocab_file.save_vocab_file, vocab_file=vocab_file.VocabFile(
          data.src_vocab, data.tgt_vocab, data.max_decode_len,
          max_source_len=data.train["src"].shape[1],
          data=data_settings(config)))
  return task_lib.Setup(
      model=model, init_inputs=(data.train["src"][:1],
                                data.train["dec_in"][:1]),
      train=fit_data, batch_plan=plan, loss_fn=loss_fn,
      model_config=translation.model_config(spec, data.src_vocab,
                                            data.tgt_vocab, config.optimizer),
      title=f"Seq2Seq ({config.cell}, {config.level} level)",
      epoch_end=held_out, save_files=save,
      data=Evaluation(data, held_out, eval_step, decoder, workdir,
                      tuple(m[2] for m in members), ensemble_eval_step),
      select_metric=f"{selection.name}_chrf", select_maximize=True)


def _decoders(config, spec, model, members: list, max_len: int):
  """The final decoder (of the ensemble, with ``members``), the epoch-end
  one (``config.dev_search()``, of the model alone) and the ensemble's
  loss step (None without members)."""
  decoded = decoding.Ensemble((model, *members)) if members else model
  decoder = translation.make_decoder(spec, decoded, max_len,
                                     strategy=config.search())
  dev_decoder = (decoder if config.dev_search() == config.search()
                 and not members else
                 translation.make_decoder(spec, model, max_len,
                                          strategy=config.dev_search()))
  ensemble_eval_step = (decoding.make_ensemble_eval_step((model, *members))
                        if members else None)
  return decoder, dev_decoder, ensemble_eval_step


def decode_held_out(config, ev: Evaluation, params) -> tuple[dict, dict]:
  """Every held-out set's loss, decoding and scores; -> (the results
  keyed ``{set}_{metric}``, each set's (hypotheses, losses, scores))."""
  data, views = ev.data, score_views()
  results, shown = {}, {}
  for name, held in data.held_out.items():  # tail: val; random: dev, test
    losses = evaluate_lib.evaluate_loss(
        ev.ensemble_eval_step or ev.eval_step, ev.decoder_params(params),
        data_lib.fit_arrays(held.loss_arrays), config.eval_batch_size)
    hypotheses = evaluate_lib.decode_texts(
        ev.decoder, ev.decoder_params(params), data.tgt_vocab,
        held.decode_arrays, config.eval_batch_size, config.decoding_key())
    scores = evaluate_lib.score_views(hypotheses, held.references, views)
    results.update({f"{name}_loss": losses["loss"],
                    f"{name}_token_accuracy": losses["token_accuracy"],
                    **{f"{name}_{k}": v for k, v in scores.items()}})
    shown[name] = (hypotheses, losses, scores)
  return results, shown


def evaluate(config, setup_: task_lib.Setup, state) -> dict:
  """The final evaluation of ``state`` (printed); -> results.json's."""
  ev = setup_.data
  data, held_out = ev.data, ev.held_out
  t0 = time.perf_counter()
  results, shown = decode_held_out(config, ev, state.params)
  eval_seconds = time.perf_counter() - t0
  print(f"Decoded by {config.search()} search (every epoch's "
        f"{data.selection.name} decoding: {config.dev_search()})")
  if config.ensemble:
    print(f"Decoded by the ensemble of {config.workdir} and "
          f"{', '.join(config.ensemble_workdirs())} (losses and token "
          "accuracies: of the members' mean probabilities, teacher forced)")
  examples = print_held_out(config.n_examples, data.reported,
                            shown[data.reported.name][0])
  for name, held in data.held_out.items():
    print_scores(held, *shown[name][1:])
  if (config.attention != "none" and config.n_attention_plots
      and not config.ensemble):  # the plots are of one model's attention
    save_attention(config, setup_, state, ev)
  plan = setup_.batch_plan
  steady = held_out.epoch_seconds[1:]
  return dict(
      **data.counts(), split_settings=data_settings(config),
      reported_set=data.reported.name, select_metric=setup_.select_metric,
      decoder=config.describe_search(),
      dev_decoder=config.dev_search().describe(),
      **({"ensemble": [config.workdir, *config.ensemble_workdirs()]}
         if config.ensemble else {}),
      epochs_completed=int(state.step) // (
          plan.steps_per_epoch if plan else
          len(data.train_pairs) // config.batch_size),
      **results, examples=examples, eval_seconds=eval_seconds,
      train_eval_seconds=held_out.eval_seconds,
      epoch_seconds=held_out.epoch_seconds,
      steady_epoch_seconds=(float(np.mean(steady)) if steady else None),
      epochs_run=len(held_out.epoch_seconds))


def save_attention(config, setup_: task_lib.Setup, state,
                   ev: Evaluation) -> None:
  """The attention weights of the first ``config.n_attention_plots``
  sentences of the selection set (dev, or val): attention.json, and
  attention.png drawn where matplotlib is installed."""
  data = ev.data
  sentences = data.selection.sources[:config.n_attention_plots]
  from seqjax import runner
  examples = translation.attention_examples(
      model_spec(config), setup_.model, state.params, data.src_vocab,
      data.tgt_vocab, sentences, data.max_decode_len)
  runner.write_json_atomic(os.path.join(ev.workdir, "attention.json"),
                           [e.to_dict() for e in examples])
  try:
    from seqjax import attention_plot
    font = attention_plot.draw(os.path.join(ev.workdir, "attention.png"),
                               examples)
  except ImportError:
    print("attention.json written; attention.png needs matplotlib "
          "(pip install 'seqjax[plot]')")
    return
  print(f"Attention heat maps of {len(examples)} {data.selection.name} "
        f"sentences: {ev.workdir}/attention.png (" + (
            f"Chinese in {font})" if font else "no CJK font installed: "
            "Chinese symbols show their indices; see README.md, Attention "
            "plots)"))


def score_views() -> dict:
  """The scores reported beside the raw ones: hypotheses and references
  both converted to simplified Chinese (the corpus mixes the scripts);
  none, with a warning, without OpenCC."""
  if not script_lib.available():
    logging.warning("OpenCC is not installed (%s): no _simplified scores",
                    script_lib.INSTALL)
    return {}
  return {"simplified": script_lib.converter("simplified")}


def print_held_out(n_examples: int, held_out: evaluate_lib.HeldOut,
                   hypotheses) -> list[dict]:
  """Prints ``n_examples`` translations of ``held_out`` with their
  references; -> the examples ("reference": the first, "references": all
  where there are more)."""
  examples = []
  if n_examples:
    for i in np.linspace(0, len(hypotheses) - 1,
                         min(n_examples, len(hypotheses))).astype(int):
      src, refs = held_out.sources[i], held_out.references[i]
      example = {"input": src, "decoded": hypotheses[i], "reference": refs[0]}
      if len(refs) > 1:
        example["references"] = refs
      examples.append(example)
      print(f"-\nInput sentence: {src}\nDecoded sentence: {hypotheses[i]}\n"
            f"Reference{'s' if len(refs) > 1 else ''}: {' | '.join(refs)}")
  return examples


def print_scores(held_out: evaluate_lib.HeldOut, losses, scores) -> None:
  """One line of a held-out set's loss and scores (and, where computed,
  those in simplified script)."""
  simplified = (f" (simplified: BLEU {scores['bleu_simplified']:.2f}, chrF "
                f"{scores['chrf_simplified']:.2f})"
                if "chrf_simplified" in scores else "")
  what = (f"{len(held_out.sources)} pairs" if held_out.name == "val" else
          f"{held_out.name}: {len(held_out.sources)} sentences, "
          f"{held_out.n_references} references")
  print(f"Held out ({what}): loss {losses['loss']:.4f}, token accuracy "
        f"{losses['token_accuracy'] * 100:.2f}%, exact match "
        f"{scores['exact_match'] * 100:.2f}%, BLEU {scores['bleu']:.2f}, "
        f"chrF {scores['chrf']:.2f}{simplified}")
