"""Shared test helpers: the one reader of TensorBoard event files, PNG pixels.

Every test that looks into a run's event files goes through `read_events`
(or one of the views built on it), so they all agree on what a summary is:

  read_events(d)     [Event(step, tag, plugin, value)] in file order
  read_values(d)     {tag: [(step, ndarray | float)]}, any kind of summary
  read_scalars(d)    {tag: [(step, float)]}, scalar summaries only
  read_histograms(d) {tag: [(step, [k, 3] ndarray (left, right, count))]}
  read_images(d)     {tag: [(step, [PNG bytes, ...])]}
  read_text(d)       {tag: [(step, str)]}
  read_tags(d)       {tag: plugin name}
  has_graph(d)       whether a graph_def was written (TensorBoard's Graphs tab)

`d` is a folder holding `events.out.tfevents.*` files (not searched
recursively: each TensorBoard run is its own folder). `decode_png` turns PNG
bytes (a file's or an image summary's) into uint8 RGB pixels for tests that
check what a figure shows.
"""

import glob
import io
import os
from typing import Any, Dict, List, NamedTuple, Tuple

import numpy as np

SCALARS, HISTOGRAMS, IMAGES, TEXT = 'scalars', 'histograms', 'images', 'text'


class Event(NamedTuple):
  """One summary value: its step, tag, plugin and the raw `Summary.Value`."""
  step: int
  tag: str
  plugin: str
  value: Any


def event_files(logdir: str) -> List[str]:
  return sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*')))


def _iterate(logdir: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for path in event_files(logdir):
    yield from tf.compat.v1.train.summary_iterator(path)


def read_events(logdir: str) -> List[Event]:
  """Every summary value under `logdir`, in file order."""
  return [Event(event.step, value.tag, value.metadata.plugin_data.plugin_name,
                value)
          for event in _iterate(logdir) for value in event.summary.value]


def has_graph(logdir: str) -> bool:
  return any(event.graph_def for event in _iterate(logdir))


def array(value) -> Any:
  """A `Summary.Value` as a numpy array (tensor) or a float (simple_value)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if value.HasField('tensor'):
    return tf.make_ndarray(value.tensor)
  return float(value.simple_value)


def _by_tag(events, convert) -> Dict[str, List[Tuple[int, Any]]]:
  out = {}
  for e in events:
    out.setdefault(e.tag, []).append((e.step, convert(e.value)))
  return out


def read_values(logdir: str) -> Dict[str, List[Tuple[int, Any]]]:
  """{tag: [(step, value)]} of every summary (arrays, floats, image bytes)."""
  return _by_tag(read_events(logdir), array)


def read_scalars(logdir: str) -> Dict[str, List[Tuple[int, float]]]:
  """{tag: [(step, float)]} of the scalar summaries (tf.summary.scalar's
  plugin, or a legacy simple_value)."""
  return _by_tag([e for e in read_events(logdir)
                  if e.plugin == SCALARS or (not e.plugin and not
                                             e.value.HasField('tensor'))],
                 lambda v: float(np.asarray(array(v)).reshape(())))


def read_histograms(logdir: str) -> Dict[str, List[Tuple[int, np.ndarray]]]:
  return _by_tag([e for e in read_events(logdir) if e.plugin == HISTOGRAMS],
                 array)


def read_images(logdir: str) -> Dict[str, List[Tuple[int, List[bytes]]]]:
  """{tag: [(step, [PNG bytes per image])]} (an image summary's tensor is
  [width, height, png, png, ...])."""
  return _by_tag([e for e in read_events(logdir) if e.plugin == IMAGES],
                 lambda v: list(array(v)[2:]))


def read_text(logdir: str) -> Dict[str, List[Tuple[int, str]]]:
  def text(value):
    return '\n'.join(x.decode() if isinstance(x, bytes) else str(x)
                     for x in np.asarray(array(value)).ravel())
  return _by_tag([e for e in read_events(logdir) if e.plugin == TEXT], text)


def read_tags(logdir: str) -> Dict[str, str]:
  """{tag: plugin name} ('scalars', 'histograms', 'images', 'text', ...)."""
  return {e.tag: e.plugin for e in read_events(logdir)}


def decode_png(png: bytes) -> np.ndarray:
  """uint8 [H, W, 3] RGB pixels of PNG bytes (alpha dropped)."""
  from matplotlib import image as mpl_image  # pylint: disable=g-import-not-at-top
  pixels = mpl_image.imread(io.BytesIO(png), format='png')
  if pixels.dtype != np.uint8:
    pixels = np.round(pixels * 255).astype(np.uint8)
  if pixels.ndim == 2:
    pixels = np.stack([pixels] * 3, -1)
  return pixels[..., :3]


def read_png(path: str) -> np.ndarray:
  with open(path, 'rb') as f:
    return decode_png(f.read())
