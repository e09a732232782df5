"""seqjax.tensorboard: event files read back by TensorBoard's own reader agree
with metrics.jsonl, after a resume too."""

import json
import os

import jax
import numpy as np
import pytest

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")

from experiments import reverse  # pylint: disable=wrong-import-position
from seqjax import runner  # pylint: disable=wrong-import-position
from seqjax import reliability  # pylint: disable=wrong-import-position
from seqjax import tensorboard  # pylint: disable=wrong-import-position
from seqjax import train as train_lib  # pylint: disable=wrong-import-position
from seqjax.data import reverse as reverse_data  # pylint: disable=C0413

GUIDANCE = {"scalars": 0, "tensors": 0, "images": 0}  # 0: keep every event


def _accumulator(workdir):
  tb_dir = os.path.join(workdir, "tb")
  acc = event_accumulator.EventAccumulator(tb_dir, size_guidance=GUIDANCE)
  acc.Reload()
  return acc


def _expected_scalars(rows):
  """{tag: [(step, float32 value)]} by hand from metrics.jsonl rows."""
  out = {}
  for row in rows:
    prefix = "eval/" if row.get("eval") else "train/"
    for key, value in row.items():
      if key in ("step", "time", "eval") or isinstance(value, (bool, str)):
        continue
      out.setdefault(prefix + key, []).append(
          (row["step"], float(np.float32(value))))
  return {tag: sorted(points) for tag, points in out.items()}


def _scalars(acc):
  return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag))
          for tag in acc.Tags()["scalars"]}


def _train(workdir, epochs):
  """A tiny reverse training through train_or_restore, which writes tb/ as
  every run does."""
  config = reverse.ReverseConfig(
      workdir=workdir, n_features=9, n_steps_in=4, n_steps_out=2, n_units=16,
      batch_size=32, epochs=epochs, log_every=4, steps_per_call=4,
      n_samples=320, learning_rate=0.02)
  data = reverse_data.generate(np.random.default_rng(0), 320, 4, 2, 9)
  model = reverse.build_model(config)
  params = model.init(jax.random.key(0), data["src"][:1], data["dec_in"][:1])
  runner.train_or_restore(
      model=model, params=params, config=config, workdir=workdir,
      model_config=config.model_config(), data=data,
      loss_fn=train_lib.make_seq2seq_loss(model),
      epoch_end_fn=lambda state, epoch: {"accuracy": 0.25 * epoch,
                                         "dev_chrf": 10.0 * epoch})


def test_scalars_equal_metrics_jsonl_after_a_resume(tmp_path):
  workdir = str(tmp_path)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  _train(workdir, 1)
  # What a run killed after step 16 (checkpoint at 10) leaves behind: rows
  # and a text past the checkpoint, in metrics.jsonl and in tb/ alike.
  log = tensorboard.TensorBoardLog(workdir)
  log.text("examples", 5, "kept: before the checkpoint")
  for step in (12, 16):
    row = {"step": step, "epoch": step / 10, "loss": 99.0, "time": 1.0}
    reliability.append_line(metrics_path, json.dumps(row))
    log.write(row)
  log.text("examples", 16, "dropped: after the checkpoint")
  log.close()
  first = _accumulator(workdir)
  assert (16, 99.0) in _scalars(first)["train/loss"]

  _train(workdir, 2)  # resumes from step 10
  rows = reliability.read_jsonl(metrics_path)
  assert [r["step"] for r in rows if not r.get("eval")] == [
      4, 8, 10, 12, 16, 20]
  assert all(r.get("loss") != 99.0 for r in rows)
  acc = _accumulator(workdir)
  got, want = _scalars(acc), _expected_scalars(rows)
  assert set(want) >= {"train/loss", "train/token_accuracy",
                       "train/learning_rate", "train/samples_per_s",
                       "eval/accuracy", "eval/dev_chrf"}
  assert got == want  # every step once, the crashed run's 99s gone
  assert got["eval/dev_chrf"] == [(10, 10.0), (20, 20.0)]
  assert len(tensorboard.event_files(os.path.join(workdir, "tb"))) == 1
  texts = {tag: sorted((e.step, e.tensor_proto.string_val[0].decode())
                       for e in acc.Tensors(tag))
           for tag in acc.Tags()["tensors"]}
  assert texts["examples/text_summary"] == [
      (5, "kept: before the checkpoint")]
  assert [s for s, _ in texts["flags/text_summary"]] == [0, 10]
  assert "| `epochs` | `2` |" in texts["flags/text_summary"][1][1]


def test_wall_time_and_skipped_values(tmp_path):
  with tensorboard.TensorBoardLog(str(tmp_path)) as log:
    log.write({"step": 3, "loss": 0.5, "time": 1234.5, "interrupted": True,
               "nonfinite_loss": "nan", "nonfinite_skipped": 2})
    log.write({"step": 3, "eval": True, "val_loss": 0.75, "time": 1235.0})
  acc = _accumulator(str(tmp_path))
  assert sorted(acc.Tags()["scalars"]) == [
      "eval/val_loss", "train/loss", "train/nonfinite_skipped"]
  (loss,) = acc.Scalars("train/loss")
  assert (loss.step, loss.value, loss.wall_time) == (3, 0.5, 1234.5)
  ours = tensorboard.read_scalars(os.path.join(str(tmp_path), "tb"))
  assert ours["eval/val_loss"] == [(3, 0.75)]


def test_images_round_trip(tmp_path):
  heat_HW = np.linspace(0, 1, 12 * 7).reshape(12, 7)
  png = tensorboard.encode_png(heat_HW)
  path = tmp_path / "heat.png"
  path.write_bytes(png)
  with tensorboard.TensorBoardLog(str(tmp_path)) as log:
    log.image("attention/array", 2, heat_HW)
    log.image("attention/file", 2, str(path))
  acc = _accumulator(str(tmp_path))
  (from_array,) = acc.Images("attention/array")
  (from_file,) = acc.Images("attention/file")
  assert (from_array.width, from_array.height, from_array.step) == (7, 12, 2)
  assert from_array.encoded_image_string == png
  assert from_file.encoded_image_string == png
  pil = pytest.importorskip("PIL.Image")
  import io  # pylint: disable=import-outside-toplevel
  decoded = np.asarray(pil.open(io.BytesIO(png)))
  np.testing.assert_array_equal(decoded, np.round(heat_HW * 255))
  rgb_HWC = np.zeros((2, 3, 3), np.uint8)
  rgb_HWC[1, 2] = (255, 0, 7)
  decoded = np.asarray(pil.open(io.BytesIO(tensorboard.encode_png(rgb_HWC))))
  np.testing.assert_array_equal(decoded, rgb_HWC)
  with pytest.raises(ValueError, match=r"shape \(2, 3, 5\)"):
    tensorboard.encode_png(np.zeros((2, 3, 5)))


def test_disabled_log_writes_nothing(tmp_path):
  log = tensorboard.TensorBoardLog.resume(None, 0)
  log.write({"step": 1, "loss": 1.0})
  log.text("t", 1, "x")
  log.close()
  assert not log.enabled and not os.listdir(tmp_path)


def test_torn_event_record_is_ignored_on_resume(tmp_path):
  workdir = str(tmp_path)
  with tensorboard.TensorBoardLog(workdir) as log:
    log.text("examples", 1, "whole")
  (path,) = tensorboard.event_files(os.path.join(workdir, "tb"))
  with open(path, "ab") as f:
    f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00torn")
  tensorboard.TensorBoardLog.resume(workdir, 5).close()
  acc = _accumulator(workdir)
  assert [e.step for e in acc.Tensors("examples/text_summary")] == [1]


def test_resume_after_a_crash_mid_resume_keeps_one_copy(tmp_path):
  workdir = str(tmp_path)
  with tensorboard.TensorBoardLog(workdir) as log:
    log.write({"step": 2, "loss": 1.5, "time": 50.0})
    log.text("examples", 2, "once")
  tb_dir = os.path.join(workdir, "tb")
  (path,) = tensorboard.event_files(tb_dir)
  with open(path, "rb") as f:  # the copy an interrupted resume leaves
    copy = f.read()
  with open(os.path.join(tb_dir, "events.out.tfevents.1.copy"), "wb") as f:
    f.write(copy)
  reliability.append_line(os.path.join(workdir, "metrics.jsonl"),
                          json.dumps({"step": 2, "loss": 1.5, "time": 50.0}))
  tensorboard.TensorBoardLog.resume(workdir, 2).close()
  acc = _accumulator(workdir)
  (text,) = acc.Tensors("examples/text_summary")
  (loss,) = acc.Scalars("train/loss")
  assert (text.step, loss.step, loss.value, loss.wall_time) == (2, 2, 1.5, 50)
  assert len(tensorboard.event_files(tb_dir)) == 1


def test_a_translation_run_shows_its_held_out_examples_as_text(tmp_path):
  from experiments import translate
  from tests import translate_util
  path = translate_util.write_pairs(tmp_path / "pairs.txt",
                                    translate_util.toy_pairs(40))
  workdir = str(tmp_path / "w")
  results = translate.run(translate.TranslateConfig(
      data_path=path, workdir=workdir, num_samples=0, validation_split=0.25,
      latent_dim=8, batch_size=10, epochs=1, log_every=0, n_examples=2,
      num_buckets=1))
  acc = _accumulator(workdir)
  (event,) = acc.Tensors("examples/text_summary")
  text = event.tensor_proto.string_val[0].decode()
  assert event.step == results["step"]
  assert text.splitlines()[0] == "| input | decoded | reference |"
  for example in results["examples"]:
    assert f"| {example['input']} | {example['decoded']} |" in text
  assert "flags/text_summary" in acc.Tags()["tensors"]


def test_tensorboardx_is_imported_without_torch():
  """tensorboardX imports torch where it is installed (seconds of every
  run's start); seqjax's import of it does not, and leaves ``import
  torch`` working after it."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  code = ("import importlib.util, sys\n"
          "from seqjax import tensorboard\n"
          "tensorboard._tensorboardx()\n"
          "assert 'torch' not in sys.modules, 'torch imported'\n"
          "if importlib.util.find_spec('torch'):\n"
          "  import torch\n"
          "  print('torch', torch.__version__)\n"
          "print('ok')\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines()[-1] == "ok"
