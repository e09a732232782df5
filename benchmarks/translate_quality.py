"""Translate quality: seqjax's default model against the Keras example's.

  python -m benchmarks.translate_quality --epochs=N [--data_path=...]
      [--json=PATH] [--workdir=DIR] [--seed=0]

The Keras defaults (the first 10,000 pairs, the last 20% held out): the data
is prepared once (``experiments.translate.prepare_data``, the library's
``seqjax.data.translation.prepare`` with the task's flags) and both models
see exactly its training pairs; the Keras ``lstm_seq2seq`` model
(``benchmarks/peers/keras_translate.py``, KERAS_BACKEND=jax) and seqjax's
default translate model (``experiments.translate.run``) train for the same
epochs, greedily decode the same held-out sources, and are scored with the
same ``seqjax.evaluate.score`` on the same references: BLEU, chrF, exact
match and the masked teacher-forced token accuracy. Both character sets come
from the training split only (held-out characters never seen in training are unknown
to both). Prints a table and writes JSON.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import argparse
import json
import platform
import tempfile

import numpy as np


def score_both(references, hypotheses_by_model: dict) -> dict:
  """Scores every model's hypotheses against the one list of references."""
  from seqjax import evaluate
  out = {}
  for name, hypotheses in hypotheses_by_model.items():
    if len(hypotheses) != len(references):
      raise ValueError(f"{name}: {len(hypotheses)} hypotheses for "
                       f"{len(references)} references")
    out[name] = evaluate.score(list(hypotheses), list(references))
  return out


def seqjax_hypotheses(config, data) -> list[str]:
  """Restores the model ``translate.run`` trained in ``config.workdir`` and
  greedily decodes the held-out sources of ``data`` (its decoder)."""
  from seqjax import evaluate
  from seqjax import translation
  translator = translation.load_translator(config.workdir)
  if (translator.vocabs.source != data.src_vocab or
      translator.vocabs.target != data.tgt_vocab):
    raise RuntimeError("the trained model's vocabulary differs from the "
                       "benchmark's data")
  from benchmarks import harness
  decoder = harness.library_decoder(translator, "translator",
                                    max_len=data.max_decode_len)
  return evaluate.decode_texts(decoder, translator.params, data.tgt_vocab,
                               data.val, config.eval_batch_size)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--epochs", type=int, required=True)
  parser.add_argument("--data_path", default="")
  parser.add_argument("--json", default="")
  parser.add_argument("--workdir", default="",
                      help="seqjax's workdir (default: a temporary one)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_samples", type=int, default=10_000)
  args = parser.parse_args(argv)
  if args.epochs < 1:
    parser.error(f"--epochs must be positive; got {args.epochs}")

  import jax
  import keras
  from benchmarks.peers import keras_translate
  from experiments import translate
  from seqjax import runner

  config = translate.TranslateConfig(
      epochs=args.epochs, data_path=args.data_path, seed=args.seed,
      num_samples=args.num_samples, n_examples=0,
      workdir=args.workdir or tempfile.mkdtemp(prefix="translate_quality_"))
  runner.check(config)
  data = translate.prepare_data(config)   # once: both models use it
  references = [t for _, t in data.val_pairs]
  print(f"{len(data.train_pairs)} training pairs, {len(references)} held out "
        f"({data.pair_file.path}); {args.epochs} epochs", flush=True)

  keras_run = keras_translate.train_and_decode(
      data.train_pairs, data.val_pairs, args.epochs, batch_size=64,
      seed=args.seed)

  results = translate.run(config)
  if results["n_train"] != len(data.train_pairs):
    raise RuntimeError("translate.run trained on other pairs")
  seqjax_hyp = seqjax_hypotheses(config, data)

  scores = score_both(references, {"keras": keras_run["hypotheses"],
                                   "seqjax": seqjax_hyp})
  scores["keras"]["token_accuracy"] = keras_run["val_token_accuracy"]
  scores["seqjax"]["token_accuracy"] = results["val_token_accuracy"]
  seqjax_seconds = results["train_seconds"] - results["train_eval_seconds"]
  rows = {
      "keras": dict(scores["keras"], train_seconds=keras_run["train_seconds"],
                    samples_per_second=(len(data.train_pairs) * args.epochs
                                        / keras_run["train_seconds"]),
                    steady_samples_per_second=keras_run[
                        "samples_per_second"],
                    n_params=keras_run["n_params"],
                    final_train_loss=keras_run["history"]["loss"][-1],
                    epoch_seconds=keras_run["epoch_seconds"]),
      # Training wall time, compile included; seqjax's per-epoch held-out
      # evaluation (Keras has none) taken out. Samples: all trained rows.
      "seqjax": dict(scores["seqjax"], train_seconds=seqjax_seconds,
                     samples_per_second=(results["step"] * config.batch_size
                                         / seqjax_seconds),
                     steady_samples_per_second=results[
                         "train_samples_per_second"],
                     n_params=results["n_params"],
                     final_train_loss=results["train_loss"],
                     epoch_seconds=results["epoch_seconds"],
                     run_val_bleu=results["val_bleu"],
                     run_val_chrf=results["val_chrf"]),
  }
  out = {"benchmark": "translate_quality", "epochs": args.epochs,
         "seed": args.seed, "data_path": data.pair_file.path,
         "n_train": len(data.train_pairs), "n_val": len(references),
         "machine": {"platform": platform.platform(),
                     "processor": platform.processor(),
                     "cpus": os.cpu_count(),
                     "device": str(jax.devices()[0])},
         "versions": {"jax": jax.__version__, "keras": keras.__version__,
                      "keras_backend": keras.backend.backend()},
         "models": rows,
         "examples": [{"input": data.val_pairs[i][0],
                       "reference": references[i],
                       "keras": keras_run["hypotheses"][i],
                       "seqjax": seqjax_hyp[i]}
                      for i in np.linspace(0, len(references) - 1,
                                           8).astype(int)]}
  print(format_table(out))
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(out, f, ensure_ascii=False, indent=1)
    print(f"Wrote {args.json}")
  return out


def format_table(out: dict) -> str:
  lines = [f"Held-out translation quality after {out['epochs']} epochs "
           f"({out['n_train']} training pairs, {out['n_val']} held out)",
           f"{'model':8} {'BLEU':>6} {'chrF':>6} {'exact%':>7} {'tok.acc%':>8}"
           f" {'train s':>8} {'samples/s':>9}"]
  for name, r in out["models"].items():
    lines.append(f"{name:8} {r['bleu']:6.2f} {r['chrf']:6.2f} "
                 f"{r['exact_match'] * 100:7.2f} "
                 f"{r['token_accuracy'] * 100:8.2f} "
                 f"{r['train_seconds']:8.1f} {r['samples_per_second']:9.0f}")
  return "\n".join(lines)


if __name__ == "__main__":
  import sys
  from seqjax.errors import SeqjaxError
  try:
    main()
  except SeqjaxError as e:  # a bad file or flag: its message, exit 2
    print(e, file=sys.stderr)
    sys.exit(2)
