"""A translation run's settings: the model, the data and what a workdir
records of them.

``config`` below is a translation run's settings
(``seqjax.translate_config.TranslateConfig``: one attribute a setting).
This module maps it to the library's values (``model_spec``, ``levels``,
``data_settings``), prepares its data, and reads back what a trained run
recorded (``recorded_config``), refusing a model trained on other data or
settings.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

from seqjax import translation
from seqjax import translation_load
from seqjax.data import pairs as pairs_lib
from seqjax.data import translation as data_lib
from seqjax.data import vocab_file
from seqjax.errors import ParameterError
from seqjax.settings import ModelSettings

ENV_VAR = "SEQJAX_CMN_PATH"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The library's parameter names that differ from the settings naming them.
FLAG_OF = {"path": "data_path", "script": "target_script",
           "units": "latent_dim"}
NUM_SAMPLES = {"tail": 10_000, "random": 0}  # num_samples unset (0: all)

# Settings that change how a trained model is evaluated or run, not which
# model or data: evaluating only (eval_only) takes the others from the run
# recorded.
EVAL_FLAGS = frozenset({
    "workdir", "eval_only", "translate", "ensemble", "ensemble_members",
    "score", "score_output",
    "n_best", "beam_size",
    "length_penalty", "sampling_temperature", "top_k", "top_p",
    "sampling_seed", "dev_beam_size", "eval_batch_size", "n_examples",
    "n_attention_plots", "log_every", "checkpoint_every",
    "checkpoint_every_secs", "progress", "num_devices", "coordinator_address",
    "num_processes", "process_id", "train_minutes", "skip_nonfinite_updates"})


def setting_error(e: ParameterError) -> ParameterError:
  """A library call's bad parameter, named by the run setting that gave it
  (``path`` -> ``data_path``)."""
  name = FLAG_OF.get(e.param, e.param)
  return e if name == e.param else ParameterError(name, e.value, e.problem)


def model_spec(config) -> translation.ModelSpec:
  """The model the settings make."""
  settings = ModelSettings(**{
      f.name: getattr(config, FLAG_OF.get(f.name, f.name))
      for f in dataclasses.fields(ModelSettings)})
  return translation.ModelSpec(settings=settings, **{
      f.name: getattr(config, f.name)
      for f in dataclasses.fields(translation.ModelSpec)
      if f.name != "settings"})


def spec_flags(spec: translation.ModelSpec) -> dict:
  """``model_spec``'s inverse: the settings (name: value) that make
  ``spec``."""
  flags = {FLAG_OF.get(k, k): v
           for k, v in dataclasses.asdict(spec.settings).items()}
  flags.update({f.name: getattr(spec, f.name)
                for f in dataclasses.fields(spec) if f.name != "settings"})
  return flags


def num_samples(config) -> int:
  """num_samples, or its default for the split (0: all)."""
  if config.num_samples is None:
    return NUM_SAMPLES[config.split]
  return config.num_samples


def levels(config) -> data_lib.Levels:
  """Each side's symbols (level, target_level) and subword settings."""
  target = config.target_level or (
      "subword" if config.level == "subword" else "char")
  return data_lib.Levels(config.level, target, config.src_vocab_size,
                         config.tgt_vocab_size, config.subword_model)


def data_settings(config) -> dict:
  """The split and target script of ``config``, as vocab.json records."""
  return vocab_file.data_settings(
      split=config.split, target_script=config.target_script,
      split_seed=config.split_seed, num_test=config.num_test,
      num_dev=config.num_dev, num_samples=num_samples(config),
      levels=levels(config))


def resolve_data_path(flag_value: str) -> str:
  """``flag_value`` (the data_path setting), else $SEQJAX_CMN_PATH, else
  ../shared/... beside the repository; a missing file stops with where the
  pairs come from."""
  if flag_value:
    path, origin = flag_value, "data_path"
  elif os.environ.get(ENV_VAR):
    path, origin = os.environ[ENV_VAR], f"${ENV_VAR}"
  else:
    path = os.path.normpath(os.path.join(ROOT, "..", "shared", "data",
                                         "cmn-eng", "cmn.txt"))
    origin = "the default (data_path unset, $SEQJAX_CMN_PATH unset)"
  if not os.path.isfile(path):
    raise ParameterError(
        "data_path", flag_value, f"no pair file at {path} (from {origin}). "
        f"{pairs_lib.HOW_TO_GET} Then pass data_path=/path/to/cmn.txt or set "
        f"${ENV_VAR}.", mentions=("data_path",))
  return path


def prepare_data(config, restored: Optional[vocab_file.VocabFile] = None
                 ) -> data_lib.TranslationData:
  """The data pipeline (``seqjax.data.translation.prepare``) with these
  settings; with ``restored``, a trained model's vocabularies and decoding
  bound."""
  vocabs = (restored.source, restored.target) if restored else None
  max_decode_len = (restored.max_decode_len if restored
                    else config.max_decode_len)
  try:
    return data_lib.prepare(
        resolve_data_path(config.data_path), num_samples=num_samples(config),
        validation_split=config.validation_split, strict=config.strict,
        level=levels(config), batch_size=config.batch_size,
        num_buckets=config.num_buckets, bucket_by=config.bucket_by,
        target_cost=functools.partial(data_lib.target_step_cost, config.cell,
                                      config.latent_dim),
        max_decode_len=max_decode_len, vocabs=vocabs, split=config.split,
        split_seed=config.split_seed, num_test=config.num_test,
        num_dev=config.num_dev, target_script=config.target_script)
  except ParameterError as e:
    raise setting_error(e) from e


def check_trained_data(config, restored: Optional[vocab_file.VocabFile],
                       workdir: str) -> None:
  """A model resumed or evaluated in ``workdir`` must have been trained on
  the same split, target script and subword settings (another split's
  held-out sentences may be its training ones); stops naming the settings
  otherwise."""
  if restored is None:
    return
  trained = dict(restored.data or vocab_file.UNRECORDED_DATA)
  now = data_settings(config)
  if trained != now:
    # Levels are recorded only with a subword side: name both sides' here.
    trained.setdefault("level", restored.source.level)
    trained.setdefault("target_level", restored.target.level)
    now.setdefault("level", config.level)
    now.setdefault("target_level", levels(config).target)
    differ = [k for k in dict.fromkeys([*trained, *now])
              if trained.get(k) != now.get(k)]
    diffs = ", ".join(f"{k}={trained.get(k)} (now {now.get(k)})"
                      for k in differ)
    raise ParameterError(
        "workdir", workdir, f"its model was trained with {diffs} "
        f"({vocab_file.VOCAB_FILE}); evaluating or training it on other data "
        "could score it on its own training sentences. Use the settings it "
        "was trained with, or another workdir; nothing was changed.",
        mentions=differ)


def check_ensemble(config) -> None:
  """An ensemble's members (``config.ensemble_workdirs()``) must share
  ``config.workdir``'s vocabularies, decoding and data; stops naming the
  first that does not, before any work (only records are read)."""
  first = translation_load.load_records(config.workdir)
  for workdir in config.ensemble_workdirs():
    try:
      translation_load.load_member_records(workdir, first, config.workdir,
                                      same_data=True)
    except ParameterError as e:
      raise setting_error(e) from e


def recorded_settings(workdir: str, config_cls) -> dict:
  """The settings (fields of ``config_cls``) of the run recorded in
  ``workdir`` that make its model and data: its results.json's, where
  written, then (overriding them) what the checkpoint and vocab.json
  record. Raises SeqjaxError for a workdir without a translation model."""
  try:
    saved, vocabs = translation_load.load_records(workdir)
  except translation.ModelNotFoundError as e:
    raise ParameterError("workdir", e.value, f"{e.problem}; a trained model "
                         "is needed (eval_only)", mentions=("eval_only",)
                         ) from e
  from seqjax import runner
  settings = {}
  results = runner.read_results(workdir)
  if results and results.get("task") == translation.TASK:
    settings.update(results.get("flags") or {})
  spec = translation.ModelSpec.from_model_config(saved)
  # Training-only settings: the record does not keep them.
  settings.update({k: v for k, v in spec_flags(spec).items()
                   if k not in ("dropout", "label_smoothing")})
  settings["optimizer"] = saved["optimizer"]
  data = dict(vocabs.data or vocab_file.UNRECORDED_DATA)
  if "num_samples" in data and settings.get("num_samples") is None:
    settings["num_samples"] = data.pop("num_samples")
  data.pop("num_samples", None)  # None in results.json: the split's default
  settings.update(data)
  fields = {f.name for f in dataclasses.fields(config_cls)}
  return {k: v for k, v in settings.items()
          if k in fields and k not in EVAL_FLAGS}


def recorded_config(config, explicit: set[str]):
  """``config`` with the recorded model and data settings of its workdir's
  run; an ``explicit`` setting that differs from its record stops the run,
  naming each such setting with both values."""
  recorded = recorded_settings(config.workdir, type(config))
  conflicts_named = [k for k, v in recorded.items()
                     if k in explicit and getattr(config, k) != v]
  conflicts = [f"{k}={getattr(config, k)} (recorded: {recorded[k]})"
               for k in conflicts_named]
  if conflicts:
    raise ParameterError(
        "workdir", config.workdir, "holds a model trained with other "
        f"settings: {', '.join(conflicts)}. To evaluate it (eval_only), "
        "leave those settings out (they are read from the workdir); nothing "
        "was changed.", mentions=[*conflicts_named, "eval_only"])
  return dataclasses.replace(config, **recorded)
