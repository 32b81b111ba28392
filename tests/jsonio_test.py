"""Tests for ear_jax.jsonio: the atomic writers and the JSON reader."""

import os

import numpy as np
import pytest

from ear_jax import jsonio


def test_json_round_trip_with_numpy_and_non_finite(tmp_path):
  path = tmp_path / "a" / "b.json"
  jsonio.write_json_atomic(path, {"x": np.float32(1.5), "y": np.arange(3),
                                  "z": float("-inf")})
  assert jsonio.read_json(path) == {"x": 1.5, "y": [0, 1, 2], "z": -np.inf}
  assert os.listdir(path.parent) == ["b.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "t.txt"
  jsonio.write_text_atomic(path, "old\n")

  def broken(f):
    f.write("half")
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError, match="killed"):
    jsonio.write_atomic(path, broken)
  assert path.read_text() == "old\n"
  assert os.listdir(tmp_path) == ["t.txt"]


def test_npy(tmp_path):
  x = np.arange(6, dtype=np.float16).reshape(2, 3)
  path = jsonio.save_npy_atomic(tmp_path / "x.npy", x)
  got = np.load(path)
  assert got.dtype == np.float16
  np.testing.assert_array_equal(got, x)


def test_read_json_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.json"):
    jsonio.read_json(tmp_path / "nope.json")
  bad = tmp_path / "bad.json"
  bad.write_text('{"a": 1')
  with pytest.raises(ValueError, match=r"bad.json: invalid JSON"):
    jsonio.read_json(bad)
  twice = tmp_path / "twice.json"
  twice.write_text('{"a": 1, "a": 2}')
  assert jsonio.read_json(twice) == {"a": 2}
  with pytest.raises(ValueError, match=r"twice.json: key 'a' appears twice"):
    jsonio.read_json(twice, unique_keys=True)


def test_write_dir_atomic_swaps_the_directory(tmp_path):
  target = tmp_path / "out"

  def fill(text):
    def write(tmp):
      os.makedirs(os.path.join(tmp, "out"))
      with open(os.path.join(tmp, "out", "f.txt"), "w") as f:
        f.write(text)
    return write

  jsonio.write_dir_atomic(target, fill("one"))
  jsonio.write_dir_atomic(target, fill("two"))
  assert (target / "f.txt").read_text() == "two"
  assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary, no .old

  def broken(tmp):
    fill("three")(tmp)
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError, match="killed"):
    jsonio.write_dir_atomic(target, broken)
  assert (target / "f.txt").read_text() == "two"
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_require_npy_files_names_folder_missing_ids_and_fix(tmp_path):
  folder = tmp_path / "labels"
  with pytest.raises(FileNotFoundError,
                     match=r"labels: 2 of 2 requested ids have no file.*"
                     r"Run stage 2\."):
    jsonio.require_npy_files(folder, ["a", "b"], "Run stage 2.")
  folder.mkdir()
  np.save(folder / "a.npy", np.zeros(3))
  (folder / "b.txt").write_text("not npy")
  with pytest.raises(FileNotFoundError, match=r"1 of 2 .*\['b'\]"):
    jsonio.require_npy_files(folder, ["a", "b"], "fix")
  np.save(folder / "b.npy", np.zeros(3))
  assert jsonio.require_npy_files(str(folder), ["a", "b"], "fix") is None
