"""The library's translation API: ``seqjax.data.translation.prepare`` and
``seqjax.translation.load_translator``, checked against independent
references (decoding the ids back to text; the binary's --translate)."""

import jax
import numpy as np
import pytest

from experiments import translate
from seqjax import train as train_lib
from seqjax import translation
from seqjax.checkpoint import Checkpointer
from seqjax.data import translation as data_lib
from seqjax.data import vocab as vocab_lib
from seqjax.errors import ParameterError
from seqjax.settings import ModelSettings
from tests import translate_util

PREPARE = dict(num_samples=0, validation_split=0.25, strict=False,
               level="char", batch_size=4, num_buckets=2)


def test_prepare_arrays_decode_back_to_the_pairs(tmp_path):
  pairs_ = translate_util.toy_pairs(20)
  path = translate_util.write_pairs(tmp_path / "p.txt", pairs_)
  data = data_lib.prepare(path, **PREPARE)
  assert data.train_pairs == pairs_[:15] and data.val_pairs == pairs_[15:]
  for arrays, split in ((data.train, pairs_[:15]), (data.val, pairs_[15:])):
    assert len(arrays["src"]) == len(split)
    for i, (en, zh) in enumerate(split):
      assert data.src_vocab.decode(arrays["src"][i]) == en
      assert arrays["src_mask"][i].sum() == len(en)
      n = len(zh) + 1  # and the end symbol
      assert data.tgt_vocab.decode(arrays["target"][i]) == zh
      assert arrays["target"][i, n - 1] == vocab_lib.END_ID
      assert arrays["dec_in"][i, 0] == vocab_lib.START_ID
      assert arrays["target_mask"][i].sum() == n
  # Held-out symbols never seen in training are unknown: here none.
  assert not data.val["src_unknown"].any()
  assert data.max_decode_len == max(len(zh) for _, zh in pairs_) + 1
  # The buckets hold every training row once, each cut to its own widths.
  rows = sorted(data.src_vocab.decode(r) for b in data.buckets
                for r in b["src"])
  assert rows == sorted(en for en, _ in pairs_[:15])
  for b in data.buckets:
    assert b["src"].shape[1] == b["src_len"].max()
    assert b["target"].shape[1] == b["target_len"].max()


@pytest.mark.parametrize("kwargs,param", [
    (dict(batch_size=16), "batch_size"),
    (dict(num_samples=1, validation_split=0.2), "validation_split"),
])
def test_prepare_refuses_naming_the_parameter(tmp_path, kwargs, param):
  path = translate_util.write_pairs(tmp_path / "p.txt",
                                    translate_util.toy_pairs(20))
  with pytest.raises(ParameterError) as e:
    data_lib.prepare(path, **{**PREPARE, **kwargs})
  assert e.value.param == param
  assert str(e.value).startswith(f"{param}={kwargs[param]}: ")
  assert "--" not in str(e.value)


def test_load_translator_translates_as_the_binary(tmp_path, capsys):
  workdir = translate_util.train_tiny(tmp_path)
  sentences = ["dog 99.", "dog 99. cat 12. tea", "ü€"]
  capsys.readouterr()
  binary = translate.run(translate.TranslateConfig(
      workdir=workdir, translate=sentences))["translations"]
  translator = translation.load_translator(workdir)
  got = translator.translate(sentences)
  assert [{"input": t.input, "decoded": t.decoded, "unknown": t.unknown,
           "truncated": t.truncated} for t in got] == binary
  assert got[1].dropped == " cat 12. tea" and got[2].unknown == ["ü", "€"]
  assert translator.step == 3  # 30 training pairs, batch 10, one epoch
  assert translator.spec == translation.ModelSpec(
      settings=ModelSettings(units=8))
  with pytest.raises(ParameterError, match="empty"):
    translator.translate(["ok", "  "])
  # The parameters alone equal those of the whole train state restored.
  vocabs = translator.vocabs
  state = train_lib.create_train_state(
      translator.model, jax.tree.map(np.zeros_like, translator.params),
      train_lib.make_optimizer("rmsprop", 1e-3))
  state = Checkpointer(workdir, translation.model_config(
      translator.spec, vocabs.source, vocabs.target, "rmsprop")).restore(state)
  assert int(state.step) == translator.step
  for a, b in zip(jax.tree.leaves(state.params),
                  jax.tree.leaves(translator.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_load_translator_without_a_model(tmp_path):
  with pytest.raises(translation.ModelNotFoundError) as e:
    translation.load_translator(str(tmp_path))
  assert e.value.param == "workdir" and str(tmp_path) in str(e.value)


def test_translate_from_standard_input_streams_one_line_per_line(tmp_path):
  import io
  import os
  import subprocess
  import sys
  workdir = translate_util.train_tiny(tmp_path)
  translator = translation.load_translator(workdir)
  sentences = ["w1 a.", "w22 bb.", "a much longer sentence than any source"]
  # The stream pads every line to the longest training source; each
  # sentence decoded at its own width gives the same text (padding is
  # masked): the stream fixes the shape, never the result.
  want = [translator.translate([s])[0].decoded for s in sentences]
  out = io.StringIO()
  got = translate.translate_stream(
      translator, io.StringIO(sentences[0] + "\n\n" + "\n".join(
          sentences[1:]) + "\n"), out)
  assert out.getvalue().split("\n")[:-1] == [want[0], ""] + want[1:]
  assert got == {"translated_lines": 4}
  # Through the binary, in a pipe: stdout holds the translations alone.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.translate", f"--workdir={workdir}",
       "--translate=-"], input="\n".join(sentences) + "\n", cwd=root,
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split("\n")[:-1] == want
  # The notes of per-sentence mode, named by line, on standard error.
  notes = [l for l in proc.stderr.splitlines() if l.startswith("line ")]
  for n, sentence in enumerate(sentences, start=1):
    t = translator.translate([sentence])[0]
    unknown = [l for l in notes if l.startswith(
        f"line {n}: (translated with the unknown symbol in place of ")]
    assert len(unknown) == (1 if t.unknown else 0), (n, notes)
    for u in t.unknown:
      assert repr(u) in unknown[0]
    truncated = [l for l in notes if l.startswith(f"line {n}: (truncated")]
    assert len(truncated) == (1 if t.truncated else 0), (n, notes)
  long = translator.translate([sentences[2]])[0]
  assert long.truncated and long.unknown
  assert (f"line 3: (truncated to the first "
          f"{translator.vocabs.max_source_len} chars, the longest training "
          f"source; dropped {long.dropped!r})") in notes


def test_load_translator_takes_the_best_checkpoint_whatever_the_optimizer(
    tmp_path):
  path = translate_util.write_pairs(tmp_path / "pairs.txt",
                                    translate_util.toy_pairs(40))
  kw = dict(data_path=path, workdir=str(tmp_path / "w"), num_samples=0,
            validation_split=0.25, latent_dim=8, batch_size=10, log_every=0,
            n_examples=0, num_buckets=1, clip_norm=1.0, lr_schedule="plateau")
  translate.run(translate.TranslateConfig(epochs=1, **kw))
  # A second epoch without --keep_best: the latest moves on, best/ stays.
  translate.run(translate.TranslateConfig(epochs=2, keep_best=False, **kw))
  translator = translation.load_translator(str(tmp_path / "w"))
  assert translator.step == 3  # the best (first) epoch's, not step 6
  best = Checkpointer(str(tmp_path / "w"), {}, subdir="best")
  restored = best.restore_params(translator.params, 3)
  for a, b in zip(jax.tree.leaves(restored),
                  jax.tree.leaves(translator.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert isinstance(translator.translate(["cat 1."])[0].decoded, str)
