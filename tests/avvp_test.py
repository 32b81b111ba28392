"""Tests for ear_jax/data/avvp.py on the real LLP/UnAV files and bad inputs.

The LLP CSVs in tests/testdata are the published files; the UnAV-100 file is
a subset of the published one (tests/testdata/README.md).
"""

import json
import time

import numpy as np
import pytest

from ear_jax.data import avvp

# pylint: disable=invalid-name

_WEAK = "filename\tevent_labels\n"
_EVAL = "filename\tonset\toffset\tevent_labels\n"


@pytest.fixture(scope="module")
def llp_dir(testdata_dir):
  return testdata_dir / "llp"


@pytest.fixture(scope="module")
def unav_json(testdata_dir):
  return testdata_dir / "unav100" / "unav100_subset.json"


@pytest.fixture(scope="module")
def llp_val(llp_dir):
  return avvp.read_llp_split(llp_dir, "val")


@pytest.fixture(scope="module")
def llp_test(llp_dir):
  return avvp.read_llp_split(llp_dir, "test")


def _eval_rows(path):
  lines = path.read_text().split("\n")[1:-1]
  return [(f, int(a), int(b), c) for f, a, b, c in
          (line.split("\t") for line in lines)]


def test_class_lists():
  assert len(avvp.LLP_CLASSES) == 25 and len(set(avvp.LLP_CLASSES)) == 25
  assert len(avvp.UNAV_CLASSES) == 100 and len(set(avvp.UNAV_CLASSES)) == 100
  assert avvp.LLP_CLASSES[5] == "Frying_(food)"
  assert avvp.LLP_CLASSES[24] == "Clapping"
  assert avvp.UNAV_CLASSES[37] == "playing base guitar"
  assert avvp.UNAV_CLASSES[77] == "vacuum cleaner cleaning floors"
  assert avvp.UNAV_CLASSES[99] == "hair dryer drying"


def test_llp_split_sizes_and_ids(llp_dir, llp_val, llp_test):
  train = avvp.read_llp_split(llp_dir, "train")
  assert (len(train.ids), len(llp_val.ids), len(llp_test.ids)) == (
      10000, 649, 1200)
  assert train.gt_a is None and train.gt_v is None
  assert train.filenames[0] == "BjCEufrlXm4_20_30"
  assert train.ids[0] == "BjCEufrlXm4"
  speech, dog = avvp.LLP_CLASSES.index("Speech"), avvp.LLP_CLASSES.index("Dog")
  assert set(np.flatnonzero(train.weak[0])) == {speech, dog}
  all_ids = train.ids + llp_val.ids + llp_test.ids
  assert len(set(all_ids)) == 11849
  assert all(len(v) == 11 for v in all_ids)
  labels_per_clip = np.concatenate(
      [s.weak.sum(1) for s in (train, llp_val, llp_test)])
  # Counting names gives 4647 / 6896; test clip LcFWKgFphXI_20_30 lists
  # "Clapping,Clapping", which is one class.
  assert np.bincount(labels_per_clip).tolist() == [0, 4648, 6895, 263, 39,
                                                   3, 0, 1]
  assert llp_test.weak[llp_test.filenames.index("LcFWKgFphXI_20_30")].sum() == 1
  assert llp_val.weak.dtype == np.uint8
  assert llp_val.gt_a.shape == (649, 25, 10) and llp_val.gt_a.dtype == np.uint8


def test_llp_gt_quirks(llp_dir, llp_val, llp_test):
  cls = avvp.LLP_CLASSES.index
  for split, fn, c in [(llp_val, "8DF2PxdT5tE_390_400", "Cheering"),
                       (llp_test, "CaC2xvdLC34_250_260", "Speech"),
                       (llp_test, "Gg3pK71kApY_30_40", "Speech")]:
    # onset >= offset rows (9 -> 0, 9 -> 9, 10 -> 10) mark nothing.
    assert split.gt_a[split.filenames.index(fn), cls(c)].sum() == 0
  h5 = llp_test.filenames.index("H5WcJwyjxIg_2_12")  # only a 0 -> 0 row
  assert llp_test.gt_a[h5].sum() == 0
  # Overlapping/touching rows OR together: Dog rows 1-1, 3-6, 9-10.
  b = llp_test.filenames.index("Baue01N86wE_10_20")
  assert np.flatnonzero(llp_test.gt_a[b, cls("Dog")]).tolist() == [3, 4, 5, 9]
  assert np.flatnonzero(llp_test.gt_a[b, cls("Speech")]).tolist() == [5, 6]
  rows = {m: _eval_rows(llp_dir / f) for m, f in avvp.LLP_EVAL_FILES.items()}
  assert sum(r[1] >= r[2] for r in rows["audio"]) == 6
  for split, want in [(llp_val, (1451, 856, 4, 70)),
                      (llp_test, (2666, 1628, 5, 121))]:
    names = set(split.filenames)
    used = [sum(r[0] in names for r in rows[m]) for m in ("audio", "visual")]
    with_rows = [{r[0] for r in rows[m]} for m in ("audio", "visual")]
    no_rows = [len(names - w) for w in with_rows]
    assert (*used, *no_rows) == want
    # A brute-force reference of the official GT matches exactly.
    row_of = {f: i for i, f in enumerate(split.filenames)}
    for m, gt in (("audio", split.gt_a), ("visual", split.gt_v)):
      ref = np.zeros_like(gt)
      for f, on, off, c in rows[m]:
        if f in names:
          for t in range(on, off):
            ref[row_of[f], cls(c), t] = 1
      np.testing.assert_array_equal(gt, ref)
  # Clips whose only audio row marks nothing have no audio GT either.
  assert (llp_val.gt_a.sum((1, 2)) == 0).sum() == 4
  assert (llp_test.gt_a.sum((1, 2)) == 0).sum() == 6
  assert (llp_test.gt_v.sum((1, 2)) == 0).sum() == 121


def test_unav_real_file(unav_json):
  train = avvp.read_unav_split(unav_json, "train")
  val = avvp.read_unav_split(unav_json, "val")  # alias
  test = avvp.read_unav_split(unav_json, "test")
  assert val.name == "validation"
  # The subset: 99 / 99 / 100 of the published 6489 / 2134 / 2167 videos,
  # every label_id in every split, 60-s videos in every split.
  assert (len(train.ids), len(val.ids), len(test.ids)) == (99, 99, 100)
  for s in (train, val, test):
    assert s.y_av.shape == (len(s.ids), 60, 100) and s.y_av.dtype == np.uint8
    assert s.valid.shape == (len(s.ids), 60)
    assert s.num_segments.dtype == np.int32 and s.num_segments.max() == 60
    np.testing.assert_array_equal(s.valid.sum(1), s.num_segments)
    # Labels never fall on padding.
    assert not (s.y_av.max(2) & (1 - s.valid)).any()
    assert (s.y_av.max((1, 2)) == 1).all()  # every video has an event
    assert (s.y_av.max((0, 1)) == 1).all()  # every class occurs
  assert train.ids[0] == "72f67ednp7w" and train.durations[0] == 47.68
  assert train.num_segments[0] == 48
  # skateboarding [13.01, 15.78316] -> segments 13, 14, 15.
  sk = avvp.UNAV_CLASSES.index("skateboarding")
  assert np.flatnonzero(train.y_av[0, :, sk])[:3].tolist() == [13, 14, 15]
  assert avvp.read_unav_class_names(unav_json) == list(avvp.UNAV_CLASSES)
  # Every event of the file, quantised by hand (start floor, end ceil; ends
  # at the duration, integer durations and overlaps included).
  database = json.loads(unav_json.read_text())["database"]
  for s in (train, val, test):
    for row, vid in enumerate(s.ids):
      rec = database[vid]
      assert s.num_segments[row] == int(np.ceil(rec["duration"]))
      ref = np.zeros((60, 100), np.uint8)
      for ann in rec["annotations"]:
        start, end = ann["segment"]
        ref[int(np.floor(start)):int(np.ceil(end)), ann["label_id"]] = 1
      np.testing.assert_array_equal(s.y_av[row], ref, err_msg=vid)


def test_unav_full_size_file_is_read_quickly(unav_json, tmp_path):
  # The published file's size (10790 videos, ~3 MB): the subset 37 times
  # under new ids.
  database = json.loads(unav_json.read_text())["database"]
  big = {f"{vid}-{k:02d}": rec for k in range(37)
         for vid, rec in database.items()}
  path = tmp_path / "unav100_annotations.json"
  path.write_text(json.dumps({"version": "unav100", "database": big}))
  assert len(big) >= 10790 and path.stat().st_size > 3e6
  t0 = time.process_time()  # CPU time: robust to a busy CI machine
  train = avvp.read_unav_split(path, "train")
  assert time.process_time() - t0 < 3.0
  assert len(train.ids) == 99 * 37 and train.ids[99] == "72f67ednp7w-01"


def _write_json(path, database):
  path.write_text(json.dumps({"version": "unav100", "database": database}))
  return path


def _ann(start, end, label_id, label=None):
  return {"segment": [start, end], "label_id": label_id,
          "label": avvp.UNAV_CLASSES[label_id] if label is None else label}


def test_unav_quantisation(tmp_path):
  path = _write_json(tmp_path / "a.json", {
      "v10": {"subset": "Train", "duration": 10.0,
              "annotations": [_ann(1.5, 3.2, 7)]},
      "v102": {"subset": "train", "duration": 10.2,
               "annotations": [_ann(9.0, 10.2, 3), _ann(0, 2, 3)]},
      "vint": {"subset": "validation", "duration": 13, "annotations": []},
      "vnone": {"subset": "test", "duration": 12.5},
  })
  assert avvp.num_segments_of(10.0) == 10 and avvp.num_segments_of(10.2) == 11
  assert avvp.event_segments(1.5, 3.2) == (1, 4)
  s = avvp.read_unav_split(path, "train")
  assert s.ids == ["v10", "v102"]
  assert s.num_segments.tolist() == [10, 11]
  assert s.y_av.shape == (2, 13, 100)  # T_max over all splits
  assert np.flatnonzero(s.y_av[0, :, 7]).tolist() == [1, 2, 3]
  assert np.flatnonzero(s.y_av[1, :, 3]).tolist() == [0, 1, 9, 10]
  assert s.valid[0].tolist() == [1] * 10 + [0] * 3
  v = avvp.read_unav_split(path, "validation")
  assert v.num_segments.tolist() == [13] and v.y_av.sum() == 0
  t = avvp.read_unav_split(path, "test", max_segments=20)
  assert t.y_av.shape == (1, 20, 100) and t.num_segments.tolist() == [13]
  with pytest.raises(ValueError, match=r"'v102'.*max_segments >= 11"):
    avvp.read_unav_split(path, "train", max_segments=10)


@pytest.mark.parametrize("database,match", [
    ({"v": {"subset": "train", "duration": 5,
            "annotations": [_ann(1, 5.5, 0)]}},
     r"video 'v'.*outside the video's 5 segments"),
    ({"v": {"subset": "train", "duration": 5,
            "annotations": [_ann(1, 2, 0), _ann(2, 3, 0, "dog barking")]}},
     r"video 'v'.*'dog barking' with label_id 0"),
    ({"v": {"subset": "train", "duration": 5,
            "annotations": [_ann(1, 2, 0), _ann(2, 3, 1, "man speaking")]}},
     r"video 'v'.*'man speaking'"),
    ({"v": {"subset": "train", "duration": 0}}, r"video 'v'.*'duration'"),
    ({"v": {"duration": 3}}, r"video 'v'.*'subset'"),
    ({"v": {"subset": "train", "duration": 5,
            "annotations": [_ann(1, 2, 100, "x")]}}, r"video 'v'.*label_id"),
])
def test_unav_bad_records(tmp_path, database, match):
  path = _write_json(tmp_path / "a.json", database)
  with pytest.raises(ValueError, match=match):
    avvp.read_unav_split(path, "train")


def test_unav_reordered_classes(tmp_path):
  # A file that consistently uses another order: label_id is trusted, the
  # caller orders its text embeddings by read_unav_class_names.
  path = _write_json(tmp_path / "a.json", {
      "v": {"subset": "train", "duration": 5,
            "annotations": [_ann(0, 1, 0, "dog barking"),
                            _ann(1, 2, 12, "man speaking")]}})
  s = avvp.read_unav_split(path, "train")
  assert s.y_av[0, 0, 0] == 1 and s.y_av[0, 1, 12] == 1
  names = avvp.read_unav_class_names(path)
  assert names[0] == "dog barking" and names[12] == "man speaking"
  assert names[1:12] == list(avvp.UNAV_CLASSES[1:12])


def test_unav_bad_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="unav100_annotations.json"):
    avvp.read_unav_split(tmp_path / "missing.json", "train")
  bad = tmp_path / "bad.json"
  bad.write_text('{"database": {')
  with pytest.raises(ValueError, match=r"bad.json: invalid JSON"):
    avvp.read_unav_split(bad, "train")
  bad.write_text('{"version": "unav100"}')
  with pytest.raises(ValueError, match=r'no "database" object'):
    avvp.read_unav_split(bad, "train")
  good = _write_json(tmp_path / "g.json",
                     {"v": {"subset": "train", "duration": 3}})
  with pytest.raises(ValueError, match=r"unknown UnAV split 'dev'"):
    avvp.read_unav_split(good, "dev")
  with pytest.raises(ValueError, match=r"no video has subset 'test'"):
    avvp.read_unav_split(good, "test")


def _llp_files(tmp_path, val, audio=_EVAL, visual=_EVAL):
  (tmp_path / "AVVP_val_pd.csv").write_text(val)
  (tmp_path / "AVVP_eval_audio.csv").write_text(audio)
  (tmp_path / "AVVP_eval_visual.csv").write_text(visual)
  return tmp_path


def test_llp_small_file(tmp_path):
  d = _llp_files(
      tmp_path,
      _WEAK + "abcdefghijk_0_10\tDog,Speech\nAB-_efghijk_5_15\tCat\n",
      _EVAL + "abcdefghijk_0_10\t2\t5\tDog\nabcdefghijk_0_10\t5\t7\tDog\n"
      "abcdefghijk_0_10\t9\t0\tSpeech\nAB-_efghijk_5_155\t0\t10\tCat\n",
      _EVAL + "AB-_efghijk_5_15\t0\t10\tCat\n")
  s = avvp.read_llp_split(d, "val")
  assert s.filenames == ["abcdefghijk_0_10", "AB-_efghijk_5_15"]
  assert s.ids == ["abcdefghijk", "AB-_efghijk"]
  assert s.weak[0].nonzero()[0].tolist() == [0, 3]
  assert np.flatnonzero(s.gt_a[0, 3]).tolist() == [2, 3, 4, 5, 6]
  assert s.gt_a[0, 0].sum() == 0 and s.gt_a[1].sum() == 0  # no exact match
  assert s.gt_v[1, 4].tolist() == [1] * 10


@pytest.mark.parametrize("val,audio,match", [
    ("", _EVAL, r"AVVP_val_pd.csv:1: file is empty"),
    (_WEAK, _EVAL, r"AVVP_val_pd.csv:2: the file has a header but no clips"),
    (_WEAK + "abcdefghijk_0_10\tDog\n", _EVAL + "x_0_10\t1_0\t3\tDog\n",
     r"AVVP_eval_audio.csv:2: onset='1_0'"),
    ("filename,event_labels\nabcdefghijk_0_10,Dog\n", _EVAL,
     r"AVVP_val_pd.csv:1: header is 'filename,event_labels'"),
    (_WEAK + "abcdefghijk_0_10\tDog\tx\n", _EVAL,
     r"AVVP_val_pd.csv:2: expected 2 tab-separated fields"),
    (_WEAK + "abcdefghijk_0_10\tDog,Wolf\n", _EVAL,
     r"AVVP_val_pd.csv:2: unknown class name 'Wolf'; valid classes are:"
     r" Speech, Car"),
    (_WEAK + "abcdefghijk_0_10\tDog\nabcdefghijk_9_19\tCat\n", _EVAL,
     r"AVVP_val_pd.csv:3: id 'abcdefghijk'.*line 2"),
    (_WEAK + "abc_0_10\tDog\n", _EVAL, r"shorter than the 11-character"),
    (_WEAK + "abcdefghijk_0_10\tDog\n",
     _EVAL + "abcdefghijk_0_10\t0\t11\tDog\n",
     r"AVVP_eval_audio.csv:2: offset='11' is not an integer second in"),
    (_WEAK + "abcdefghijk_0_10\tDog\n", _EVAL + "x_0_10\t0.5\t3\tDog\n",
     r"AVVP_eval_audio.csv:2: onset='0.5'"),
    (_WEAK + "abcdefghijk_0_10\tDog\n", _EVAL + "x_0_10\t0\t3\tdog\n",
     r"AVVP_eval_audio.csv:2: unknown class name 'dog'"),
    (_WEAK + "abcdefghijk_0_10\tDog\n", "", r"AVVP_eval_audio.csv:1: file is"),
])
def test_llp_bad_files(tmp_path, val, audio, match):
  d = _llp_files(tmp_path, val, audio)
  with pytest.raises(ValueError, match=match):
    avvp.read_llp_split(d, "val")


def test_llp_missing_file_and_split(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"AVVP_test_pd.csv not found"):
    avvp.read_llp_split(tmp_path, "test")
  with pytest.raises(ValueError, match=r"unknown LLP split 'dev'"):
    avvp.read_llp_split(tmp_path, "dev")
