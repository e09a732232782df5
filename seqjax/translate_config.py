"""A translation run's settings: the Keras example's, then the data split,
the symbols of each side, the model, evaluation and inference.

One typed field a setting, with its bounds and help (``seqjax.config.field``);
the translate binary makes one flag of each. ``seqjax.translate_runs`` maps
them to the library's values.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from seqjax import attention as attention_lib
from seqjax import config as config_lib
from seqjax import limits
from seqjax import train as train_lib
from seqjax import translation
from seqjax.config import field
from seqjax.data import script as script_lib
from seqjax.data import subword as subword_lib
from seqjax.data import translation as data_lib
from seqjax.data import vocab as vocab_lib
from seqjax.models import FEEDBACKS
from seqjax.translate_runs import ENV_VAR, model_spec


@dataclasses.dataclass
class TranslateConfig(config_lib.DevDecodingConfig):
  # The Keras example's training settings.
  epochs: int = field(100, "Passes over the training pairs (Keras: 100).",
                      low=1, high=limits.INT32_MAX)
  batch_size: int = field(64, "Training batch size (Keras: 64).", low=1,
                          high=limits.MAX_BATCH)
  optimizer: str = field("rmsprop", "adam, rmsprop (Keras) or sgd.",
                         choices=train_lib.OPTIMIZERS)

  data_path: str = field(
      "", f"The pair file (cmn.txt). Empty: ${ENV_VAR}, else "
      "../shared/data/cmn-eng/cmn.txt beside the repository.")
  num_samples: Optional[int] = field(
      None, "Use the first N valid pairs; 0: all; unset: 10000 with "
      "--split=tail (Keras), all with --split=random (the reported split).",
      low=0, high=limits.MAX_EXAMPLES)
  split: str = field(
      "tail", "tail: the last --validation_split of the pairs held out "
      "(Keras; the file is sorted by length, so the longest); random: by "
      "English sentence, --num_test and --num_dev sentences held out with "
      "all their translations as references (the split reported results "
      "use, ../shared/data/cmn-eng/README.md).", choices=data_lib.SPLITS)
  validation_split: float = field(0.2, "--split=tail: the fraction of the "
                                  "pairs, taken from the end as in Keras, "
                                  "held out for evaluation.",
                                  above=0.0, below=1.0)
  split_seed: int = field(0, "--split=random: the seed of the sentences' "
                          "permutation.", low=0, high=limits.MAX_SEED)
  num_test: int = field(1000, "--split=random: test sentences, scored once "
                        "at the end (never looked at in training).", low=1,
                        high=limits.MAX_EXAMPLES)
  num_dev: int = field(500, "--split=random: dev sentences, decoded and "
                       "scored after every epoch (model selection).", low=1,
                       high=limits.MAX_EXAMPLES)
  target_script: str = field(
      "as_is", "Convert the Chinese targets (training pairs and references) "
      "to one script with OpenCC: as_is, simplified or traditional.",
      choices=script_lib.SCRIPTS)
  strict: bool = field(False, "Stop at a malformed line of the pair file "
                       "instead of skipping and counting it.")
  level: str = field("char", "The English source's symbols: char "
                     "(Keras); word (needs --embedding_dim; Chinese targets "
                     "stay characters); subword: SentencePiece pieces "
                     "(needs --embedding_dim; targets too unless "
                     "--target_level=char).", choices=vocab_lib.LEVELS)
  target_level: Optional[str] = field(
      None, "The Chinese target's symbols: char or subword (SentencePiece); "
      "unset: subword with --level=subword, else char.",
      choices=vocab_lib.TARGET_LEVELS)
  src_vocab_size: int = field(
      4000, "A subword source's SentencePiece vocabulary size (at most; a "
      "small corpus may give fewer pieces).", low=16, high=limits.MAX_VOCAB)
  tgt_vocab_size: int = field(
      4000, "A subword target's SentencePiece vocabulary size (at most); at "
      "least the training targets' distinct characters (3,500 on cmn.txt).",
      low=16, high=limits.MAX_VOCAB)
  subword_model: str = field(
      "unigram", "The SentencePiece algorithm of subword sides: unigram or "
      "bpe. Both are trained on the training split only and saved in the "
      "workdir (spm_source.model, spm_target.model).",
      choices=subword_lib.MODEL_TYPES)
  cell: str = config_lib.cell_field()
  latent_dim: int = field(256, "Units of encoder and decoder (Keras: 256).",
                          low=1, high=limits.MAX_UNITS)
  embedding_dim: Optional[int] = field(
      None, "Embedding width in front of encoder and decoder; unset: one-hot "
      "inputs (a kernel row lookup).", low=1, high=limits.MAX_UNITS)
  teacher_forcing: bool = field(True, "Feed the decoder the true previous "
                                "character in training; false: its own "
                                "prediction.")
  feedback: str = field("softmax", "Without teacher forcing, what is fed "
                        "back: softmax (the distribution, as Keras) or "
                        "argmax (the token).", choices=FEEDBACKS)
  encoder_layers: int = field(1, "Stacked encoder layers.", low=1,
                              high=limits.MAX_LENGTH)
  decoder_layers: int = field(1, "Stacked decoder layers.", low=1,
                              high=limits.MAX_LENGTH)
  bidirectional: bool = field(False, "A backward layer beside each encoder "
                              "layer (outputs concatenated; a bridge maps "
                              "the final carries to the decoder's).")
  attention: str = field("none", "none (Keras), bahdanau (additive) or luong "
                         "(multiplicative) attention over the source.",
                         choices=attention_lib.KINDS)
  attention_score: str = field(
      "general", "Luong's score: " + ", ".join(attention_lib.SCORES)
      + " (Bahdanau's is additive).", choices=tuple(attention_lib.SCORES))
  input_feeding: bool = field(True, "Luong: feed the attentional state to "
                              "the next decoder step.")
  dropout: float = field(0.0, "Dropout on embeddings, between layers and "
                         "before the readout (training only).", low=0.0,
                         below=1.0)
  label_smoothing: float = field(0.0, "Label smoothing of the training loss.",
                                 low=0.0, below=1.0)
  bucket_by: str = field("target", "Order of the pairs the buckets cut: "
                         "target (by target length) or both (by each pair's "
                         "work, source and target: less source padding).",
                         choices=vocab_lib.BUCKET_BY)
  num_buckets: int = field(4, "Length buckets of the training pairs (1: pad "
                           "all to the longest, as Keras).", low=1,
                           high=limits.MAX_LENGTH)
  max_decode_len: int = field(0, "Decoding steps at most; 0: the longest "
                              "target (with its end symbol) of the pairs.",
                              low=0, high=limits.MAX_LENGTH)
  eval_batch_size: int = field(256, "Batch size of held-out evaluation.",
                               low=1, high=limits.MAX_BATCH)
  n_examples: int = field(10, "Held-out translations to print.", low=0,
                          high=limits.MAX_EXAMPLES)
  n_attention_plots: int = field(4, "With attention: heat maps of this many "
                                 "dev sentences (attention.png/.json).",
                                 low=0, high=100)
  translate: Optional[list[str]] = field(
      None, "Translate these sentences with the model in --workdir (no "
      "training; the model settings come from its checkpoint; the best "
      "checkpoint where --keep_best kept one, else the latest). Repeatable; "
      "'-': read standard input, one sentence a line, one translation a "
      "line out.")
  ensemble: str = field(
      "", "Comma-separated workdirs of more trained translation models, "
      "decoded with --workdir's as one ensemble (their log-probabilities "
      "averaged every step) by --translate and --eval_only; they must share "
      "its vocabularies (vocab.json) and decoding, and with --eval_only its "
      "data. Members may differ in architecture.")
  ensemble_members: int = field(
      1, "Train K models, seeds --seed..--seed+K-1, as one vectorized group "
      "(in --workdir's member=0..K-1, each selected on dev as a lone run), "
      "then evaluate them as one ensemble (results.json in --workdir); "
      "--translate and --eval_only on --workdir then decode that ensemble. "
      "1: one model.", low=1, high=limits.MAX_BATCH)
  score: str = field(
      "", "Score the model in --workdir on this file, one "
      "source<TAB>reference a line: each pair's log-probability and its "
      "tokens' (teacher forced, the end symbol included) as JSON lines to "
      "--score_output (no training).")
  score_output: str = field("", "--score: write the JSON lines here "
                            "instead of standard output.")
  n_best: int = field(1, "--translate: print the N best translations of "
                      "the beam search with their scores (at most "
                      "--beam_size), or N samples a sentence with their "
                      "log-probabilities (--sampling_temperature).", low=1,
                      high=limits.MAX_BATCH)

  def ensemble_workdirs(self) -> list[str]:
    """--ensemble's workdirs (empty: --workdir's model alone)."""
    return self.ensemble.split(",") if self.ensemble else []

  def members_errors(self) -> list[str]:
    """What --ensemble_members=K (a vectorized group) cannot honour."""
    k = self.ensemble_members
    if k == 1:
      return []
    refused = [("ensemble", "an ensemble of other workdirs"),
               ("translate", "--translate on its --workdir decodes the "
                "ensemble"), ("eval_only", "--eval_only on its --workdir "
                "evaluates the ensemble"), ("score", "scoring takes one model"),
               ("dropout", "a group's members would share the first "
                "member's dropout masks"), ("ema_decay", "a group keeps no "
                "moving average"), ("lr_schedule", "a group trains with a "
                "constant learning rate"), ("num_processes", "a group runs in "
                "one process")]
    defaults = {f.name: f.default for f in dataclasses.fields(self)}
    return [f"--ensemble_members={k} with --{name}={getattr(self, name)!r}: "
            f"{why}" for name, why in refused
            if getattr(self, name) != defaults[name]] + (
        [f"--ensemble_members={k} with --keep_best_n={self.keep_best_n}: a "
         "group keeps each member's best epoch only"]
        if self.keep_best_n > 1 else [])

  def decodes_stepwise(self) -> bool:
    return translation.decodes_tokens(model_spec(self))

  def validate(self) -> list[str]:
    errors = super().validate()
    if self.n_best > self.beam_size and not self.sampling():
      errors.append(f"--n_best={self.n_best} exceeds --beam_size="
                    f"{self.beam_size}: the search keeps {self.beam_size} "
                    "finished hypotheses")
    if self.level in ("word", "subword") and self.embedding_dim is None:
      errors.append(f"--level={self.level} needs --embedding_dim "
                    f"({self.level}s go through an Embedding layer)")
    if (self.attention == "luong" and self.bidirectional
        and attention_lib.SCORES[self.attention_score].same_width):
      errors.append(f"--attention_score={self.attention_score} needs encoder "
                    "outputs of the decoder's size: not with --bidirectional "
                    "(use general)")
    if (self.target_script != script_lib.AS_IS and not self.translate
        and not script_lib.available()):
      errors.append(f"--target_script={self.target_script} needs OpenCC: "
                    f"{script_lib.INSTALL}")
    if self.ensemble and self.score:
      errors.append("--ensemble with --score: scoring takes one model")
    if self.ensemble and not (self.translate or self.eval_only):
      errors.append("--ensemble needs --translate or --eval_only: it decodes "
                    "trained models (training takes one)")
    if any(not w.strip() for w in self.ensemble_workdirs()):
      errors.append(f"--ensemble={self.ensemble!r} names an empty workdir")
    errors += self.members_errors()
    if self.translate and not self.workdir:
      errors.append("--translate needs --workdir (a trained model's)")
    if self.score and not self.workdir:
      errors.append("--score needs --workdir (a trained model's)")
    if self.score and self.translate:
      errors.append("--score and --translate: one at a time")
    if self.score_output and not self.score:
      errors.append("--score_output needs --score")
    for i, sentence in enumerate(self.translate or [], start=1):
      if not sentence.strip():
        errors.append(f"--translate={sentence!r} (sentence {i}) is empty or "
                      "only spaces: nothing to translate")
    return errors
