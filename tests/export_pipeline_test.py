"""Raw videos -> feature export (tiny nets) -> stage 2 and stage 3 on LLP.

A small LLP dataset (a stand-in for LLP's sample video, generated 10-s clips,
AVVP CSVs written here) gets its features only from the exporters: CLIP/CLAP
with tiny random Hugging Face models, the HAN layout with tiny random JAX
nets. A real stage-1 :tiny run on synthetic UnAV makes the generator; stage 2
:tiny and stage 3 :tiny then run on the exported LLP root, and every feature
array they read is checked against the exported files.
"""

import contextlib
import json
import math
import os

import numpy as np
import pytest

# pylint: disable=g-import-not-at-top,wrong-import-position
# pylint: disable=redefined-outer-name

pytest.importorskip("av")
pytest.importorskip("torch")
pytest.importorskip("transformers")

import export_fixtures
from ear_jax.configs import export_clip_clap
from ear_jax.configs import export_han
from ear_jax.configs import stage1 as stage1_config
from ear_jax.configs import stage2 as stage2_config
from ear_jax.configs import stage3 as stage3_config
from ear_jax import config_lib
from ear_jax import metrics as metrics_lib
from ear_jax.data import avvp
from ear_jax.data import features as features_lib
from ear_jax.data import llp_features
from ear_jax.data import pseudo_label_files as pl_files
from ear_jax.data import synthetic
from ear_jax.stages import generate_pseudo_labels as stage2_lib
from ear_jax.stages import pretrain_generator as stage1_lib
from ear_jax.stages import train_parser as stage3_lib
from feature_export import driver as export_lib

SAMPLE_ID = export_fixtures.SAMPLE_ID
SPLITS = ("train", "val", "test")
# LLP filename (<11-char id>_<start>_<end>), split, fps (None: the stand-in
# of LLP's sample video, export_fixtures.write_sample_clip), weak labels,
# audio GT rows, visual GT rows (class, onset, offset).
CLIPS = (
    (f"{SAMPLE_ID}_20_30", "train", None, "Speech,Dog", (), ()),
    ("genclip0001_0_10", "train", 24, "Cello", (), ()),
    ("genclip0002_30_40", "train", 30, "Speech,Car", (), ()),
    ("genclip0003_10_20", "val", 24, "Dog,Speech",
     (("Dog", 0, 4), ("Speech", 5, 10)), (("Dog", 0, 10),)),
    ("genclip0004_50_60", "val", 30, "Car", (("Car", 2, 8),),
     (("Car", 0, 6),)),
    ("genclip0005_0_10", "test", 24, "Violin_fiddle,Speech",
     (("Violin_fiddle", 0, 10), ("Speech", 3, 6)),
     (("Violin_fiddle", 0, 10),)),
    ("genclip0006_20_30", "test", 30, "Dog", (("Dog", 1, 3),),
     (("Dog", 4, 9),)),
)
IDS = {s: [fn[:avvp.LLP_ID_LEN] for fn, split, *_ in CLIPS if split == s]
       for s in SPLITS}
ALL_IDS = [i for s in SPLITS for i in IDS[s]]


def run_stage(config):
  """What `python launch.py --config=...` runs once the flags are parsed."""
  config_lib.check_required(config)
  fn = {"export_features": export_lib.run,
        "pretrain_generator": stage1_lib.run,
        "generate_pseudo_labels": stage2_lib.run,
        "train_parser": stage3_lib.run}[config.stage]
  return fn(config)


def _write_lines(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_llp_csvs(root):
  """AVVP_{train,val_pd,test_pd}.csv, the eval CSVs and the full list."""
  weak = {s: ["\t".join(avvp.LLP_WEAK_HEADER)] for s in SPLITS}
  for fn, split, _, labels, _, _ in CLIPS:
    weak[split].append(f"{fn}\t{labels}")
  for split, name in avvp.LLP_SPLIT_FILES.items():
    _write_lines(root / name, weak[split])
  _write_lines(root / avvp.LLP_FULL_FILE,
               weak["train"] + weak["val"][1:] + weak["test"][1:])
  for k, modality in enumerate(("audio", "visual")):
    lines = ["\t".join(avvp.LLP_EVAL_HEADER)]
    for fn, *_, gt_a, gt_v in CLIPS:
      lines += [f"{fn}\t{s}\t{e}\t{c}" for c, s, e in (gt_a, gt_v)[k]]
    _write_lines(root / avvp.LLP_EVAL_FILES[modality], lines)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sample_video):
  """(llp_root, {exporter: manifest}): LLP whose features are all exported."""
  base = tmp_path_factory.mktemp("export_pipeline")
  videos, llp = base / "videos", base / "LLP"
  videos.mkdir()
  llp.mkdir()
  for fn, _, fps, *_ in CLIPS:
    if fps is None:
      os.symlink(sample_video, videos / f"{fn}.mp4")
    else:
      export_fixtures.write_clip(videos / f"{fn}.mp4", 10.0, fps,
                                 size=(32, 24))
  write_llp_csvs(llp)
  clip_dir, clap_dir = export_fixtures.write_tiny_hf_models(base / "hf")

  c = export_clip_clap.get_config("tiny")  # LLP: 10 rows, LLP class names
  c.workdir = str(base / "export_clip_clap")
  c.videos_dir, c.output_root = str(videos), str(llp)
  c.clip_model, c.clap_model = str(clip_dir), str(clap_dir)
  c.id_length = avvp.LLP_ID_LEN
  c.progress = False
  c.clip_batch_size = c.clap_batch_size = 35  # 2 torch calls, not 18
  h = export_han.get_config("tiny")
  h.workdir = str(base / "export_han")
  h.videos_dir, h.output_root = str(videos), str(llp)
  h.id_length = avvp.LLP_ID_LEN
  h.progress = False
  # Fewer pixels than :tiny (R(2+1)D-18 keeps its full 512-d width, and runs
  # slowly at XLA opt level 0): 8x8 crops, larger batches.
  h.resnet_resize, h.resnet_crop = 10, 8
  h.r2plus1d_resize, h.r2plus1d_crop = (10, 14), 8
  h.batch_sizes.update(res152=280, r2plus1d_18=35)
  manifests = {"clip_clap": run_stage(c), "han": run_stage(h)}
  return llp, manifests


@contextlib.contextmanager
def spy_feature_loads(monkeypatch):
  """Records every (root, name, ids, array) the data layer hands out."""
  seg, evt = [], []
  load_seg = features_lib.load_segment_features
  load_evt = features_lib.load_event_features

  def segment(root, name, ids, *args, **kwargs):
    out = load_seg(root, name, ids, *args, **kwargs)
    seg.append((os.fspath(root), name, list(ids), out.copy()))
    return out

  def event(root, name, num_classes):
    out = load_evt(root, name, num_classes)
    evt.append((os.fspath(root), name, out.copy()))
    return out

  with monkeypatch.context() as m:
    m.setattr(features_lib, "load_segment_features", segment)
    m.setattr(features_lib, "load_event_features", event)
    yield seg, evt


def exported_segments(root, name, vid):
  """The exported file of `vid`, as the LLP loader reads it: [10, D]."""
  x = np.load(features_lib.feature_path(root, name, vid))
  fps = features_lib.SEGMENT_FEATURES[name].frames_per_segment
  assert x.shape == (10 * fps, features_lib.SEGMENT_FEATURES[name].dim)
  return x.reshape(10, fps, -1).mean(axis=1)  # res152: 8 frames per segment


def check_loads_are_exported(root, loads, names):
  assert loads, "nothing was loaded"
  assert {name for _, name, _, _ in loads} == set(names)
  for got_root, name, ids, x in loads:
    assert got_root == os.fspath(root), name
    assert x.shape == (len(ids), 10, features_lib.SEGMENT_FEATURES[name].dim)
    for i, vid in enumerate(ids):
      np.testing.assert_allclose(x[i], exported_segments(root, name, vid),
                                 rtol=1e-6, atol=1e-6, err_msg=(name, vid))


def check_eval_json(path, n_videos, split):
  with open(path) as f:
    out = json.load(f)
  for key in metrics_lib.AGGREGATE_KEYS + ("avg",):
    assert math.isfinite(out[key]) and 0.0 <= out[key] <= 100.0, (key, out)
  assert out["split"] == split and out["n_videos"] == n_videos
  return out


# ----------------------------------------------------------------------------
# Stage 1 (synthetic UnAV) -> stage 2 -> stage 3 on the exported LLP.


@pytest.fixture(scope="module")
def stage1_workdir(tmp_path_factory):
  """A real stage-1 :tiny run on a small synthetic UnAV set."""
  base = tmp_path_factory.mktemp("export_pipeline_s1")
  synthetic.write_synthetic(base / "data", seed=5, num_llp=(1, 1, 1),
                            num_unav=(8, 4, 1), unav_max_duration=12,
                            han_features=False)
  c = stage1_config.get_config("tiny")
  c.workdir = str(base / "s1")
  c.data.unav_root = str(base / "data" / "UnAV")
  c.progress = False
  c.checkpoint_every_epochs = c.total_epochs  # orbax saves cost ~3 s each
  run_stage(c)
  return c.workdir


def check_exports(llp, manifests):
  for name, m in manifests.items():
    assert m["counts"] == dict(total=7, done=7, skipped=0, failed=0), name
    assert sorted(m["videos"]) == sorted(ALL_IDS)
    assert all(v["num_segments"] == 10 for v in m["videos"].values())
  assert manifests["han"]["random_init_for_testing"] is True
  for s in SPLITS:
    assert avvp.read_llp_split(llp, s).ids == IDS[s]
  for name in ("clip", "clap"):
    text = features_lib.load_event_features(llp, name, len(avvp.LLP_CLASSES))
    assert text.shape == (25, features_lib.SEGMENT_FEATURES[name].dim)
  for features, dims in (("vggish_res152_r2plus1d", (128, 2560)),
                         ("clip_clap", (512, 768))):
    x = llp_features.load_parser_inputs(llp, ALL_IDS, features, num_workers=1)
    assert x["audio"].shape == (7, 10, dims[0])
    assert x["visual"].shape == (7, 10, dims[1])
    assert np.isfinite(x["audio"]).all() and np.isfinite(x["visual"]).all()
  # The sample video has 10 s of real content: its segments differ.
  clip = exported_segments(llp, "clip", SAMPLE_ID)
  assert np.abs(clip - clip[0]).max() > 1e-4


def run_stage2(llp, manifests, generator_workdir, workdir, monkeypatch):
  c = stage2_config.get_config("tiny")
  c.workdir = str(workdir)
  c.generator_workdir = generator_workdir
  c.data.llp_root = str(llp)
  # Two tiny epochs rarely beat val Seg-AV 0: there may be no best/.
  c.checkpoint = "latest"
  c.progress = False
  with spy_feature_loads(monkeypatch) as (seg, evt):
    run_stage(c)

  check_loads_are_exported(llp, seg, ("clip", "clap"))
  assert sorted(i for _, _, ids, _ in seg for i in ids) == sorted(ALL_IDS * 2)
  assert sorted((root, name) for root, name, _ in evt) == [
      (str(llp), "clap"), (str(llp), "clip")]
  for _, name, text in evt:
    np.testing.assert_array_equal(
        text, np.load(llp / features_lib.EVENT_FEATURES[name]))

  manifest = pl_files.read_manifest(c.workdir)
  assert manifest["ids"] == IDS
  for m in manifests.values():  # exactly the exported videos
    assert sorted(i for s in SPLITS for i in manifest["ids"][s]) == sorted(
        m["videos"])
  assert manifest["source"]["checkpoint"] == "latest"
  assert manifest["source"]["generator_workdir"] == os.path.abspath(
      generator_workdir)
  for s in ("val", "test"):
    check_eval_json(os.path.join(c.workdir, "eval", f"{s}.json"),
                    len(IDS[s]), s)
    with open(os.path.join(c.workdir, "eval", f"baselines_{s}.json")) as f:
      assert set(json.load(f)) == {"weak_everywhere", "zero_shot"}
  pl = pl_files.read_stage2(c.workdir, ALL_IDS,
                            expect_classes=avvp.LLP_CLASSES)
  assert pl["a_logit"].shape == pl["v_logit"].shape == (7, 10, 25)
  assert np.isfinite(pl["a_logit"]).all() and np.isfinite(pl["v_logit"]).all()
  return c.workdir


def run_stage3(llp, pseudo_labels_dir, workdir, features, monkeypatch):
  c = stage3_config.get_config("tiny")
  c.workdir = str(workdir)
  c.pseudo_labels_dir = pseudo_labels_dir
  c.data.llp_root = str(llp)
  c.data.features = features
  # HAN: the tiny EAR train step takes ~40 s longer to compile on CPU
  # (stage3_test.py runs EAR end to end); under test here is the data path.
  c.model.name = "han"
  c.progress = False
  c.checkpoint_every_epochs = c.total_epochs  # orbax saves cost ~3 s each
  with spy_feature_loads(monkeypatch) as (seg, _):
    run_stage(c)

  audio, visual_2d, visual_3d = llp_features.FEATURE_SETS[features]
  check_loads_are_exported(
      llp, seg, [audio, visual_2d] + ([visual_3d] if visual_3d else []))
  # Each split's inputs once: train, then val / test when first evaluated.
  assert [ids for _, n, ids, _ in seg if n == audio] == [
      IDS[s] for s in SPLITS]
  for s in ("val", "test"):
    out = check_eval_json(os.path.join(c.workdir, "eval", f"{s}.json"),
                          len(IDS[s]), s)
    assert out["pseudo_labels_dir"] == os.path.abspath(pseudo_labels_dir)


def test_exported_features_feed_stage2_and_stage3(exported, stage1_workdir,
                                                  tmp_path, monkeypatch):
  """One test, not one per stage: with `pytest -n auto` separate tests may
  land on different workers, each redoing the export and stages 1-2."""
  llp, manifests = exported
  check_exports(llp, manifests)
  s2 = run_stage2(llp, manifests, stage1_workdir, tmp_path / "s2",
                  monkeypatch)
  for features in ("vggish_res152_r2plus1d", "clip_clap"):
    run_stage3(llp, s2, tmp_path / f"s3_{features}", features, monkeypatch)
