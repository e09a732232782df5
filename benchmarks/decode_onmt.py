"""The decode workload's OpenNMT-py peer: its own RNN model of the
workload's sizes (``onmt.model_builder.build_base_model``: ``-encoder_type
brnn -decoder_type rnn -rnn_type LSTM -global_attention general -input_feed
1``), randomly initialised, decoded by its own ``Translator.translate_batch``
(``BeamSearch`` with the GNMT penalty ``-length_penalty wu -alpha``; greedy:
``GreedySearch``, ``-beam_size 1 -random_sampling_topk 1``, its argmax), as
its translate command does for each batch.

OpenNMT-py's RNN decoder starts from the encoder's final states, both
directions concatenated, so its decoder is as wide as its whole encoder:
``-hidden_size 512`` is 256 a direction with a 512-unit decoder
(``onmt_h512``), ``-hidden_size 256`` a 256-unit decoder with 128 a
direction (``onmt_h256``); seqjax's bridge maps 2 x 256 to a 256 decoder,
so both are run. Equal work (``steps``): ``-min_length = -max_length =
steps`` (its end symbol blocked until the last step; ``-max_length_ratio
0``: the source length does not cap it). Benchmark-only: ``pip install
--no-deps OpenNMT-py==3.5.1 configargparse six pyonmttok``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np

from benchmarks import harness

# Imported by onmt.transforms (data-preparation transforms every import of
# onmt loads) and never called when decoding token ids: absent ones are
# stood in for, so that only OpenNMT-py's pure-Python needs are installed.
TRANSFORM_ONLY_MODULES = ("spacy", "fasttext", "ahocorasick", "rapidfuzz")


def import_onmt():
  """Imports OpenNMT-py's decoding modules; the transform-only modules that
  are not installed are stood in for by modules whose every name raises
  ImportError when called."""
  def stand_in(name):
    module = types.ModuleType(name)

    def attr(a):
      if a.startswith("__"):
        raise AttributeError(a)

      def missing(*_, **__):
        raise ImportError(f"{name}.{a}: {name} is not installed (only "
                          "OpenNMT-py's data transforms use it)")
      return missing
    module.__getattr__ = attr
    return module
  stood_in = []
  for name in TRANSFORM_ONLY_MODULES:
    if name not in sys.modules and importlib.util.find_spec(name) is None:
      sys.modules[name] = stand_in(name)
      stood_in.append(name)
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torch.cuda.amp deprecations
    import onmt
    import onmt.model_builder
    import onmt.translate
    from onmt.translate import translator
  return onmt, translator, stood_in


def onmt_vocab(size: int):
  """A pyonmttok vocabulary of ``size`` symbols, OpenNMT-py's specials
  first (unk 0, pad 1, bos 2, eos 3)."""
  import pyonmttok
  from onmt.constants import DefaultTokens as T
  specials = [T.UNK, T.PAD, T.BOS, T.EOS]
  return pyonmttok.build_vocab_from_tokens(
      specials + [f"w{i}" for i in range(size - len(specials))])


def onmt_source_ids(src_NS: np.ndarray) -> np.ndarray:
  """seqjax source ids (pad 0, unk 1) -> OpenNMT-py's (unk 0, pad 1)."""
  return np.where(src_NS == 0, 1, np.where(src_NS == 1, 0, src_NS))


class Runner:
  """OpenNMT-py's model of the workload's sizes (``-hidden_size hidden``)
  and its Translator for each decoder."""

  def __init__(self, w, hidden: int):
    import torch
    onmt, self.translator_lib, stood_in = import_onmt()  # first: stand-ins
    from onmt.bin.train import _get_parser as train_parser
    from onmt.utils.parse import ArgumentParser
    from onmt.constants import DefaultTokens
    self.w, s = w, w.s
    self.threads = harness.set_torch_threads()  # as many as seqjax's
    self.onmt = onmt
    torch.manual_seed(s.seed)
    self.vocabs = {"src": onmt_vocab(w.src_vocab),
                   "tgt": onmt_vocab(w.tgt_vocab),
                   "decoder_start_token": DefaultTokens.BOS}
    self.model_args = [
        "-model_type", "text", "-encoder_type", "brnn", "-decoder_type",
        "rnn", "-rnn_type", "LSTM", "-layers", "1", "-hidden_size",
        str(hidden), "-word_vec_size", str(w.arch["embedding_dim"]),
        "-global_attention", "general", "-input_feed", "1", "-dropout", "0"]
    self.model_opt, unknown = train_parser().parse_known_args(
        self.model_args + ["-data", "{}", "-save_data", "unused",
                           "-src_vocab", "unused"])
    assert not unknown, unknown
    ArgumentParser.update_model_opts(self.model_opt)
    ArgumentParser.validate_model_opts(self.model_opt)
    self.model = onmt.model_builder.build_base_model(self.model_opt,
                                                     self.vocabs)
    # OpenNMT-py's default initialisation (-param_init 0.1); its generator
    # is built uninitialised.
    for p in self.model.parameters():
      torch.nn.init.uniform_(p, -0.1, 0.1)
    self.model.eval()
    self.parameters = int(sum(p.numel() for p in self.model.parameters()))
    self.hidden, self.framework = hidden, f"onmt_h{hidden}"
    self.steps_run = self.rows_run = 0
    self.translators = {}
    beam = f"beam{s.beam_size}"
    for name in ("greedy", beam, "greedy_natural", f"{beam}_natural"):
      self.translators[name] = self._translator(
          1 if name.startswith("greedy") else s.beam_size,
          natural=name.endswith("_natural"))
    self.notes = [
        f"OpenNMT-py {getattr(onmt, '__version__', '?')}: "
        f"Translator.translate_batch on torch {torch.__version__} "
        f"({self.threads} threads, {torch.get_num_interop_threads()} "
        "inter-op), each batch cut to its widest source; decoding options "
        + "; ".join(f"{k}: {' '.join(v)}" for k, v in self.options.items())]
    if stood_in:
      self.notes.append("OpenNMT-py: stood in for the transform-only "
                        f"modules {', '.join(stood_in)} (not installed)")

  def _translator(self, beam: int, natural: bool):
    from onmt.bin.translate import _get_parser as translate_parser
    from onmt.utils.parse import ArgumentParser
    s = self.w.s
    equal = s.steps and not natural  # the end symbol blocked until max_len
    args = ["-n_best", "1", "-beam_size", str(beam), "-max_length",
            str(self.w.max_len), "-min_length",
            str(self.w.max_len) if equal else "0", "-max_length_ratio", "0"]
    if beam > 1:
      args += ["-length_penalty", "wu", "-alpha", str(s.length_penalty)]
    else:  # greedy: GreedySearch's argmax
      args += ["-random_sampling_topk", "1"]
    self.options = getattr(self, "options", {})
    self.options[f"beam {beam}{' natural' if natural else ''}"] = args
    opt = translate_parser().parse_args(
        ["-model", "unused", "-src", "unused", "-gpu", "-1"] + args)
    ArgumentParser.validate_translate_opts(opt)
    scorer = self.onmt.translate.GNMTGlobalScorer.from_opt(opt)
    tr = self.translator_lib.Translator.from_opt(
        self.model, self.vocabs, opt, self.model_opt, global_scorer=scorer,
        out_file=open(os.devnull, "w", encoding="utf-8"),
        report_score=False)
    # Counts decoder steps (one call a step; a negligible wrapper).
    step = tr._decode_and_generate  # pylint: disable=protected-access

    def counted(decoder_in, *args, **kwargs):
      self.steps_run += 1
      self.rows_run += len(decoder_in)
      return step(decoder_in, *args, **kwargs)
    tr._decode_and_generate = counted  # pylint: disable=protected-access
    return tr

  def versions(self) -> dict:
    import torch
    return {"OpenNMT-py": getattr(self.onmt, "__version__", "?"),
            "torch": torch.__version__}

  def model_info(self) -> dict:
    return {"parameters": self.parameters,
            "class": "onmt.models.NMTModel (build_base_model)",
            "options": " ".join(self.model_args),
            "sizes": f"brnn LSTM encoder {self.hidden // 2} a direction, "
                     f"{self.hidden}-unit LSTM decoder (InputFeedRNNDecoder"
                     "), GlobalAttention general, embeddings "
                     f"{self.w.arch['embedding_dim']}"}

  def _batch(self, start: int, stop: int) -> dict:
    import torch
    mask = self.w.mask_NS[start:stop]
    lengths = mask.sum(1)
    src = onmt_source_ids(self.w.src_NS[start:stop, :int(lengths.max())])
    return {"src": torch.from_numpy(src.astype(np.int64))[:, :, None],
            "srclen": torch.from_numpy(lengths.astype(np.int64))}

  def decode(self, decoder: str, batch: int):
    """-> tokens (N, max_len), pad after the end (OpenNMT-py's ids: eos 3,
    pad 1), decoder steps and rows stepped summed over the batches."""
    tr, out = self.translators[decoder.split("@")[0]], []
    self.steps_run = self.rows_run = 0
    for a, b in self.w.batches(batch):
      result = tr.translate_batch(self._batch(a, b), attn_debug=False)
      for hyps in result["predictions"]:
        row = np.full(self.w.max_len, 1, np.int32)
        ids = hyps[0].numpy()[:self.w.max_len]
        row[:len(ids)] = ids
        out.append(row)
    return np.stack(out), self.steps_run, self.rows_run

  def first_call(self, decoder: str, batch: int) -> dict:
    a, b = self.w.batches(batch)[0]
    tr = self.translators[decoder]
    secs, _ = harness.timed(lambda: tr.translate_batch(self._batch(a, b),
                                                       attn_debug=False))
    return {"first_call_s": secs, "compiles": 0}
