"""Long videos in chunks: streaming readers and chunked export equal one
pass; the exporter interface, registry and driver's import graph."""

import ast
import os
import typing

import numpy as np
import pytest

# pylint: disable=g-import-not-at-top,wrong-import-position

pytest.importorskip("av")

import export_fixtures
from ear_jax.configs import export_han
from feature_export import common
from feature_export import decode
from feature_export import driver


def _frame_index(rgb_HxWx3):
  bands = rgb_HxWx3.mean(axis=(0, 2)).reshape(8, -1)[:, 2:-2].mean(axis=1)
  return int(sum(1 << b for b in range(8) if bands[b] > 128))


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
  d = tmp_path_factory.mktemp("long")
  export_fixtures.write_clip(d / "long.mp4", 23.0, 6, size=(64, 32),
                             rate=16000)
  return d


def test_chunk_ranges():
  assert common.chunk_ranges(23, 0) == [(0, 23)]
  assert common.chunk_ranges(10, 60) == [(0, 10)]
  assert common.chunk_ranges(23, 10) == [(0, 10), (10, 20), (20, 23)]


def test_streaming_readers_equal_one_pass(long_video):
  info = decode.probe(os.fspath(long_video / "long.mp4"))
  times = decode.segment_times(23, 3)
  conv = lambda fr: _frame_index(fr.to_ndarray(format="rgb24"))
  whole = decode.read_frames(info, times, conv)
  assert whole[0] == 1 and whole[-1] == 23 * 6 - 1  # t = 1/6 s, 22 5/6 s
  with decode.FrameReader(info) as reader:
    parts = []
    for lo, hi in common.chunk_ranges(23, 7):
      parts += reader.take(times[lo * 3:hi * 3], conv)
    assert reader.video_seconds == np.inf
  assert parts == whole
  wave, real = decode.read_audio(info, 16000, 23)
  assert real == pytest.approx(23.0, abs=0.05)
  with decode.AudioReader(info, 16000, 23 * 16000) as reader:
    a = reader.read(0, 100_000)
    b = reader.read(90_000, 300_000)  # overlapping: starts only move forward
    c = reader.read(300_000, 23 * 16000 + 500)  # past the limit: zeros
    with pytest.raises(ValueError, match="forward"):
      reader.read(10, 20)
  np.testing.assert_array_equal(a[90_000:], b[:10_000])
  np.testing.assert_array_equal(np.concatenate([a[:90_000], b, c[:-500]]),
                                wave)
  assert not c[-500:].any()


def test_chunked_han_export_equals_one_pass(long_video, tmp_path):
  """23 one-second rows; chunks of 7 segments give the same features."""
  out = {}
  for chunk in (0, 7):
    c = export_han.get_config("tiny")
    c.workdir = os.fspath(tmp_path / f"wd{chunk}")
    c.videos_dir = os.fspath(long_video)
    c.output_root = os.fspath(tmp_path / f"out{chunk}")
    c.num_segments, c.chunk_segments, c.progress = 0, chunk, False
    m = driver.run(c)
    assert m["counts"]["done"] == 1 and not m["failures"], m["failures"]
    assert m["videos"]["long"]["num_segments"] == 23
    out[chunk] = {f: np.load(os.path.join(c.output_root, *sub.split("/"),
                                          "long.npy"))
                  for f, sub in (("vggish", "feats/vggish"),
                                 ("res152", "feats/res152"),
                                 ("r2plus1d_18", "feats/r2plus1d_18"))}
  for f, rows in (("vggish", 23), ("res152", 23 * 8), ("r2plus1d_18", 23)):
    assert out[0][f].shape[0] == rows
    np.testing.assert_allclose(out[7][f], out[0][f], rtol=1e-5, atol=1e-6,
                               err_msg=f)


def test_chunked_clip_clap_export_equals_one_pass(long_video, tmp_path):
  """CLIP frames and CLAP audio read in chunks of 7 s: the same rows."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from ear_jax.configs import export_clip_clap
  clip_dir, clap_dir = export_fixtures.write_tiny_hf_models(tmp_path / "hf")
  out = {}
  for chunk in (0, 7):
    c = export_clip_clap.get_config("tiny,dataset=unav")
    c.workdir = os.fspath(tmp_path / f"wd{chunk}")
    c.videos_dir = os.fspath(long_video)
    c.output_root = os.fspath(tmp_path / f"out{chunk}")
    c.clip_model, c.clap_model = os.fspath(clip_dir), os.fspath(clap_dir)
    c.chunk_segments, c.progress = chunk, False
    m = driver.run(c)
    assert m["counts"]["done"] == 1 and not m["failures"], m["failures"]
    out[chunk] = {f: np.load(os.path.join(c.output_root, sub, "long.npy"))
                  for f, sub in (("clip", "feats_CLIP/segment_feats"),
                                 ("clap", "feats_CLAP/segment_feats"))}
  for f in ("clip", "clap"):
    assert out[0][f].shape[0] == 23
    np.testing.assert_allclose(out[7][f], out[0][f], rtol=1e-5, atol=1e-6,
                               err_msg=f)


def test_batcher_joins_chunks_of_videos():
  done = {}
  b = driver.RowBatcher(lambda x: x * 2.0, 4, done.__setitem__, pad=True)
  b.add("a", np.arange(3.0)[:, None], last=False)
  b.add("a", np.arange(3.0, 6.0)[:, None], last=False)
  b.add("b", np.ones((2, 1)))  # b is complete, but after a
  assert not done
  b.close("a")
  b.flush()
  np.testing.assert_array_equal(done["a"][:, 0], 2.0 * np.arange(6.0))
  np.testing.assert_array_equal(done["b"], 2.0 * np.ones((2, 1)))
  with pytest.raises(ValueError, match="after its last chunk"):
    b.add("c", np.ones((1, 1)))
    b.add("c", np.ones((1, 1)))


def test_prefetch_keeps_order_and_reraises():
  def gen(item):
    for k in range(item):
      yield (item, k)
  items = [3, 1, 4, 2, 5]
  want = [(i, k) for i in items for k in range(i)]
  assert list(driver.prefetch_chunks(items, gen, 2, depth=1)) == want
  assert list(driver.prefetch_chunks(items, gen, 0)) == want

  def bad(item):
    yield item
    raise KeyError("boom")
  with pytest.raises(KeyError, match="boom"):
    list(driver.prefetch_chunks([1, 2, 3], bad, 2))


def test_exporter_interface_registry_and_import_graph():
  """Every registered exporter has the Protocol's members; common.py
  imports no exporter and no exporter imports the registry or driver."""
  pytest.importorskip("torch")
  from feature_export import registry
  members = {n for n in common.Exporter.__dict__ if not n.startswith("_")}
  members |= set(typing.get_type_hints(common.Exporter))
  assert {"prepare", "encoder", "finalize", "name", "features"} <= members
  assert set(registry.EXPORTERS) == {"clip_clap", "han"}
  for cls in registry.EXPORTERS.values():
    # `features` is set per instance (config.features).
    missing = [m for m in members - {"features"} if not hasattr(cls, m)]
    assert not missing, (cls, missing)
  pkg = os.path.dirname(common.__file__)

  def imports(name):
    with open(os.path.join(pkg, f"{name}.py")) as f:
      tree = ast.parse(f.read())
    out = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == "feature_export":
        out |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and (
          node.module or "").startswith("feature_export."):
        out.add(node.module.split(".")[1])
    return out

  assert imports("common") <= {"decode"}
  for name in ("clip_clap", "han"):
    assert not imports(name) & {"registry", "driver"}, name
  assert "driver" not in imports("registry")
  c = export_han.get_config("tiny")
  c.exporter = "nope"
  with pytest.raises(ValueError, match="config.exporter='nope'"):
    registry.get_exporter(c)
