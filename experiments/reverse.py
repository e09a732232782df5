"""The reverse task of the encoder-decoder tutorial.

Source: ``n_steps_in`` random integers in 1..n_features-1; target: the first
``n_steps_out`` of them reversed. A teacher-forced LSTM encoder-decoder is
trained, then evaluated by batched greedy decoding on fresh sequences;
``--model=repeat_vector`` trains the RepeatVector encoder-decoder instead,
evaluated by the argmax of one forward pass.

  python -m experiments.reverse [--n_units=128 --epochs=1 --workdir=...]
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from seqjax import decode as decode_lib
from seqjax import experiment
from seqjax import metrics
from seqjax import models
from seqjax import reliability
from seqjax import summary
from seqjax import train as train_lib
from seqjax.data import reverse as reverse_data
from seqjax.experiment import field

TASK = "reverse"


@dataclasses.dataclass
class ReverseConfig(experiment.TrainingConfig):
  n_features: int = field(51, "Cardinality: source values are 1..n_features-1"
                          " (0 is padding and the start token).")
  n_steps_in: int = field(6, "Source length.")
  n_steps_out: int = field(3, "Target length (the first n_steps_out source "
                           "values, reversed).")
  n_units: int = field(128, "LSTM units of encoder and decoder.")
  cell: str = field("lstm", "Recurrent cell: lstm or gru.")
  n_samples: int = field(100_000, "Training sequences.")
  n_eval: int = field(1000, "Fresh sequences to evaluate on.")
  n_examples: int = field(10, "Decoded examples to print.")
  model: str = field("encoder_decoder", "encoder_decoder (teacher forcing + "
                     "greedy decoding) or repeat_vector (RepeatVector + "
                     "TimeDistributed, one forward pass).")

  def validate(self):
    errors = super().validate()
    for name in ("n_steps_in", "n_steps_out", "n_units", "n_samples", "n_eval"):
      if getattr(self, name) < 1:
        errors.append(f"--{name} must be positive; got {getattr(self, name)}")
    if self.n_features < 3:
      errors.append(f"--n_features must be >= 3 (0 is reserved, and at least "
                    f"two values make a task); got {self.n_features}")
    if self.n_steps_out > self.n_steps_in:
      errors.append(f"--n_steps_out={self.n_steps_out} must not exceed "
                    f"--n_steps_in={self.n_steps_in}")
    if self.batch_size > self.n_samples:
      errors.append(f"--batch_size={self.batch_size} exceeds "
                    f"--n_samples={self.n_samples}")
    if self.cell not in ("lstm", "gru"):
      errors.append(f"--cell must be lstm or gru; got {self.cell!r}")
    if self.n_examples < 0:
      errors.append(f"--n_examples must be >= 0; got {self.n_examples}")
    if self.model not in models.MODEL_CHOICES:
      errors.append(f"--model must be one of {', '.join(models.MODEL_CHOICES)}"
                    f"; got {self.model!r}")
    errors += reliability.range_errors(self, {
        "n_features": (None, reliability.MAX_VOCAB),
        "n_steps_in": (None, reliability.MAX_LENGTH),
        "n_steps_out": (None, reliability.MAX_LENGTH),
        "n_units": (None, reliability.MAX_UNITS),
        "n_samples": (None, reliability.MAX_EXAMPLES),
        "n_eval": (None, reliability.MAX_EXAMPLES)})
    if not errors:  # each size fits; their products must fit in memory too
      f, u = self.n_features, self.n_units
      n_params = 2 * 4 * u * (f + u + 1) + (u + 1) * f
      tokens = (self.n_samples + self.n_eval) * (self.n_steps_in +
                                                 2 * self.n_steps_out)
      if n_params > reliability.INT32_MAX:
        errors.append(f"--n_units={u} with --n_features={f} makes "
                      f"{n_params:,} parameters; at most "
                      f"{reliability.INT32_MAX:,}")
      if tokens > reliability.INT32_MAX:
        errors.append(f"--n_samples + --n_eval = {self.n_samples + self.n_eval:,}"
                      f" sequences of --n_steps_in + 2 --n_steps_out tokens "
                      f"make {tokens:,} tokens; at most "
                      f"{reliability.INT32_MAX:,}")
    return errors

  def model_config(self) -> dict:
    """What the checkpoint must match."""
    config = {"task": TASK, "n_features": self.n_features,
              "n_units": self.n_units, "cell": self.cell}
    if self.model != "encoder_decoder":  # absent: older checkpoints resume
      config["model"] = self.model
    return config


def build_model(config: ReverseConfig):
  return models.build_seq2seq(
      config.model, src_vocab=config.n_features, tgt_vocab=config.n_features,
      units=config.n_units, out_len=config.n_steps_out, cell=config.cell,
      dtype=config.compute_dtype())


def run(config: ReverseConfig) -> dict:
  experiment.check_config(config)
  workdir = experiment.resolve_workdir(config, TASK)
  train = reverse_data.generate(
      np.random.default_rng([config.seed, 0]), config.n_samples,
      config.n_steps_in, config.n_steps_out, config.n_features)
  fresh = reverse_data.generate(
      np.random.default_rng([config.seed, 1]), config.n_eval,
      config.n_steps_in, config.n_steps_out, config.n_features)
  # The tutorial prints its one-hot arrays' shapes; ours are ids, same data.
  f = config.n_features
  print(f"X1={train['src'].shape + (f,)} X2={train['dec_in'].shape + (f,)} "
        f"y={train['target'].shape + (f,)} (one-hot shapes; stored as int32 ids)")

  model = build_model(config)
  params = jax.jit(lambda key, src, dec_in: models.init_params(
      model, key, src, dec_in))(jax.random.key(config.seed), train["src"][:1],
                                train["dec_in"][:1])
  print(summary.format_summary(params, title=f"{config.model} ({config.cell})"))
  state, stats = experiment.train_or_restore(
      model=model, params=params, config=config, workdir=workdir,
      model_config=config.model_config(), data=train,
      loss_fn=train_lib.make_seq2seq_loss(model))

  decoder = decode_lib.make_token_predictor(
      model, max_len=config.n_steps_out, start_id=reverse_data.START_ID)
  yhat = decode_lib.decode_in_batches(decoder, state.params, fresh["src"],
                                      batch_size=min(config.n_eval, 1000))
  accuracy = float(metrics.exact_sequence_accuracy(yhat, fresh["target"]))
  token_accuracy = float(metrics.masked_token_accuracy(yhat, fresh["target"]))
  print(f"Accuracy: {accuracy * 100:.2f}%")
  for i in range(min(config.n_examples, config.n_eval)):
    print(f"X={fresh['src'][i].tolist()} y={fresh['target'][i].tolist()}, "
          f"yhat={yhat[i].tolist()}")

  results = experiment.base_results(TASK, config)
  results.update(
      workdir=workdir, accuracy=accuracy, token_accuracy=token_accuracy,
      n_eval=config.n_eval, step=int(state.step),
      **experiment.training_results(stats, config.batch_size, params))
  if jax.process_index() == 0:  # one writer when several processes train
    experiment.write_json_atomic(f"{workdir}/results.json", results)
    print(f"Wrote {workdir}/results.json")
  return results


if __name__ == "__main__":
  from experiments import common
  common.main(ReverseConfig, run)
