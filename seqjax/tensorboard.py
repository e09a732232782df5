"""TensorBoard event files in ``<workdir>/tb/``, without TensorFlow or PyTorch.

Written through tensorboardX (pure Python; needs only numpy, packaging and
protobuf): ``pip install 'seqjax[tensorboard]'``. View with ``tensorboard
--logdir <workdir>/tb`` (the ``tensorboard`` package; not needed to write).

API (process 0 only writes, like ``seqjax.train.MetricsLog``)::

  log = TensorBoardLog.resume(workdir, step)  # at the run's start, right after
                                              # reliability.prepare_resume(
                                              #     metrics_path, step)
  log.text("flags", step, flags_markdown(dataclasses.asdict(config)))
  log.write(row)         # every row that goes to metrics.jsonl, as it goes
  log.text("examples", step, "...")           # example translations
  log.image("attention/0", step, "heat.png")  # a PNG path, PNG bytes or array
  log.close()            # flushes; also a context manager

* ``write(row)`` takes a metrics.jsonl row as is: each numeric value (bools
  and strings skipped; ``step`` is the x axis, ``time`` the event's wall time)
  becomes the scalar ``train/<key>``, or ``eval/<key>`` for rows with
  ``"eval": true``.
* **Resume.** metrics.jsonl is the record that resume trims. ``resume`` makes
  ``tb/`` agree with it: the scalars are rebuilt from the (trimmed)
  metrics.jsonl, the text and images of steps <= ``step`` are kept from the
  old event files, everything else is dropped, and the old files are replaced
  by one new file. Steps trained again are therefore never shown twice. Call
  it with step 0 on a fresh start too (it clears a stale ``tb/``).
* ``TensorBoardLog(None)`` (and ``resume(None, ...)``) writes nothing: what
  processes other than 0 get.
* ``read_events(tb_dir)`` reads the event files back (tests, ``resume``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import struct
import sys
import time
import types
import uuid
import zlib
from typing import Iterator, Optional, Union

import numpy as np

from seqjax import reliability
from seqjax.errors import SeqjaxError

TB_DIR = "tb"
_SKIPPED_KEYS = ("step", "time", "eval")


def _tensorboardx() -> types.SimpleNamespace:
  """tensorboardX's writer, summary builders and protos, imported late so
  that seqjax imports without it."""
  # pylint: disable=import-outside-toplevel
  # tensorboardX imports torch where it is installed: 1.5 s of every run's
  # start on this project's CPU. seqjax hands it NumPy values only, so its
  # import sees no torch (an entry of None makes ``import torch`` fail).
  hide_torch = "torch" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None
  try:
    from tensorboardX import FileWriter
    from tensorboardX import summary
    from tensorboardX.proto import event_pb2
    from tensorboardX.proto import summary_pb2
  except ImportError as e:
    raise SeqjaxError("TensorBoard logging needs tensorboardX, which is not "
                      "installed: pip install 'seqjax[tensorboard]' (or pip "
                      "install tensorboardX)") from e
  finally:
    if hide_torch:
      del sys.modules["torch"]
  return types.SimpleNamespace(FileWriter=FileWriter, summary=summary,
                               event_pb2=event_pb2, summary_pb2=summary_pb2)


def available() -> bool:
  """Whether tensorboardX can be imported (so TensorBoardLog can write)."""
  try:
    _tensorboardx()
  except SeqjaxError:
    return False
  return True


def row_scalars(row: dict) -> dict[str, float]:
  """The scalars a metrics.jsonl row becomes: {tag: value}."""
  prefix = "eval/" if row.get("eval") else "train/"
  return {prefix + key: float(value) for key, value in row.items()
          if key not in _SKIPPED_KEYS and not isinstance(value, bool)
          and isinstance(value, (int, float, np.integer, np.floating))}


def flags_markdown(flags: dict) -> str:
  """A run's flags as a Markdown table (TensorBoard's text tab renders it)."""
  lines = ["| flag | value |", "|---|---|"]
  for name, value in sorted(flags.items()):
    text = str(value).replace("|", "\\|").replace("\n", " ")
    lines.append(f"| `{name}` | `{text}` |")
  return "\n".join(lines)


def examples_markdown(examples: list[dict]) -> str:
  """Example rows (say input / decoded / reference) as a Markdown table."""
  keys = list(dict.fromkeys(k for row in examples for k in row))
  lines = ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
  for row in examples:
    cells = (str(row.get(k, "")).replace("|", "\\|").replace("\n", " ")
             for k in keys)
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


class TensorBoardLog(contextlib.AbstractContextManager):
  """One event file in ``<workdir>/tb/``; ``workdir=None`` writes nothing."""

  def __init__(self, workdir: Optional[str], flush_secs: float = 10.0):
    self.dir = None if workdir is None else os.path.join(workdir, TB_DIR)
    self._writer = None
    if self.dir is not None:
      tbx = _tensorboardx()
      # File names carry the second only: the suffix keeps two writers
      # started in one second (a resume's rewrite) on distinct files.
      self._writer = tbx.FileWriter(
          self.dir, flush_secs=flush_secs,
          filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}")

  @classmethod
  def resume(cls, workdir: Optional[str], step: int,
             metrics_path: Optional[str] = None,
             flush_secs: float = 10.0) -> "TensorBoardLog":
    """A log for a run (re)starting at ``step`` whose ``tb/`` agrees with
    ``metrics_path`` (default ``<workdir>/metrics.jsonl``, already trimmed by
    ``reliability.prepare_resume``): see the module docstring."""
    if workdir is None:
      return cls(None)
    _tensorboardx()
    metrics_path = metrics_path or os.path.join(workdir, "metrics.jsonl")
    old_files = event_files(os.path.join(workdir, TB_DIR))
    kept = {}  # by content: a crash during an earlier resume left copies
    for path in old_files:
      for event in _read_file(path):
        if event.step <= step and _keep_on_resume(event):
          kept.setdefault(event.SerializeToString(), event)
    log = cls(workdir, flush_secs)
    for row in reliability.read_jsonl(metrics_path):
      if isinstance(row, dict) and "step" in row and row["step"] <= step:
        log.write(row)
    for event in kept.values():
      log._writer.add_event(event, event.step, event.wall_time)
    log.flush()
    # A crash before this leaves old and new files: the next resume rebuilds
    # the scalars and deduplicates the rest, so nothing doubles for good.
    for path in old_files:
      os.unlink(path)
    return log

  @property
  def enabled(self) -> bool:
    return self._writer is not None

  def write(self, row: dict) -> None:
    """The numeric values of one metrics.jsonl row, as scalars at its step."""
    if self._writer is None:
      return
    tbx = _tensorboardx()
    step, walltime = int(row["step"]), row.get("time", time.time())
    for tag, value in row_scalars(row).items():
      self._writer.add_summary(tbx.summary.scalar(tag, value), step, walltime)

  def text(self, tag: str, step: int, text: str) -> None:
    """Markdown text under ``tag`` at ``step`` (TensorBoard's text tab)."""
    if self._writer is None:
      return
    tbx = _tensorboardx()
    self._writer.add_summary(tbx.summary.text(tag, text), int(step),
                             time.time())

  def image(self, tag: str, step: int,
            png: Union[str, bytes, np.ndarray]) -> None:
    """An image under ``tag`` at ``step``: a PNG file's path, PNG bytes, or an
    array (H, W) or (H, W, 1|3|4), uint8 or floats in [0, 1]."""
    if self._writer is None:
      return
    tbx = _tensorboardx()
    if isinstance(png, str):
      with open(png, "rb") as f:
        png = f.read()
    elif not isinstance(png, bytes):
      png = encode_png(np.asarray(png))
    width, height, channels = _png_shape(png)
    summary_pb2 = tbx.summary_pb2
    image = summary_pb2.Summary.Image(height=height, width=width,
                                      colorspace=channels,
                                      encoded_image_string=png)
    summary = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, image=image)])
    self._writer.add_summary(summary, int(step), time.time())

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __exit__(self, *exc):
    self.close()


def _keep_on_resume(event) -> bool:
  """Text and images carry over; scalars are rebuilt from metrics.jsonl, and
  file headers are written anew."""
  values = event.summary.value
  return bool(values) and all(v.WhichOneof("value") != "simple_value"
                              for v in values)


# --------------------------------------------------------------------------
# Reading event files back (TFRecord framing, Event protos).


def event_files(tb_dir: str) -> list[str]:
  """The event files of ``tb_dir``, oldest first."""
  return sorted(glob.glob(os.path.join(tb_dir, "*tfevents*")))


def _read_file(path: str) -> Iterator:
  event_pb2 = _tensorboardx().event_pb2
  with open(path, "rb") as f:
    data = f.read()
  offset = 0
  while offset + 12 <= len(data):
    (length,) = struct.unpack_from("<Q", data, offset)
    end = offset + 12 + length + 4
    if end > len(data):
      break  # a record torn by a crash: what came before it stands
    yield event_pb2.Event.FromString(data[offset + 12:end - 4])
    offset = end


def read_events(tb_dir: str) -> list:
  """Every Event proto of ``tb_dir``'s event files, in file order."""
  return [e for path in event_files(tb_dir) for e in _read_file(path)]


def read_scalars(tb_dir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of the scalars in ``tb_dir``."""
  out = {}
  for event in read_events(tb_dir):
    for v in event.summary.value:
      if v.WhichOneof("value") == "simple_value":
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


# --------------------------------------------------------------------------
# PNG.


def encode_png(image: np.ndarray) -> bytes:
  """A PNG of an (H, W) or (H, W, 1|3|4) array: uint8, or floats in [0, 1]."""
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
    raise SeqjaxError(f"an image must be (H, W) or (H, W, 1|3|4); got shape "
                      f"{image.shape}")
  if image.dtype != np.uint8:
    image = np.clip(np.nan_to_num(image.astype(np.float64)), 0, 1)
    image = np.round(image * 255).astype(np.uint8)
  height, width, channels = image.shape
  color_type = {1: 0, 3: 2, 4: 6}[channels]
  raw = b"".join(b"\x00" + image[y].tobytes() for y in range(height))

  def chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body +
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

  header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
          chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _png_shape(png: bytes) -> tuple[int, int, int]:
  """(width, height, channels) from a PNG's header."""
  if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
    raise SeqjaxError("not a PNG image (no PNG signature and IHDR header)")
  width, height, _, color_type = struct.unpack(">IIBB", png[16:26])
  return width, height, {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color_type, 3)

