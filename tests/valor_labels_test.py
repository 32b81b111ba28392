"""VALOR's binary pseudo-label folders (CLAP/ audio, CLIP/ visual)."""

import numpy as np
import pytest

from ear_jax.data import valor_labels


def _write(root, ids, rng, dtype=np.float32):
  for sub in (valor_labels.AUDIO_DIR, valor_labels.VISUAL_DIR):
    (root / sub).mkdir(parents=True, exist_ok=True)
    for vid in ids:
      x = (rng.random((10, 25)) < 0.3).astype(dtype)
      np.save(root / sub / f"{vid}.npy", x)


def test_reads_both_modalities_in_id_order(tmp_path):
  ids = ["aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc"]
  _write(tmp_path, ids, np.random.default_rng(0), dtype=np.int64)
  out = valor_labels.read_valor_labels(tmp_path, ids[::-1])
  for m, sub in (("a", valor_labels.AUDIO_DIR), ("v", valor_labels.VISUAL_DIR)):
    assert out[f"{m}_label"].dtype == np.uint8
    assert out[f"{m}_label"].shape == (3, 10, 25)
    np.testing.assert_array_equal(out[f"{m}_label"][0],
                                  np.load(tmp_path / sub / f"{ids[2]}.npy"))


def test_errors_name_the_folder_or_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="CLAP/segment_pseudo_labels"):
    valor_labels.read_valor_labels(tmp_path, ["aaaaaaaaaaa"])
  _write(tmp_path, ["aaaaaaaaaaa"], np.random.default_rng(0))
  with pytest.raises(FileNotFoundError, match=r"1 of 2 requested ids"):
    valor_labels.read_valor_labels(tmp_path, ["aaaaaaaaaaa", "zzzzzzzzzzz"])
  bad = tmp_path / valor_labels.VISUAL_DIR / "aaaaaaaaaaa.npy"
  np.save(bad, np.full((10, 25), 0.5, np.float32))
  with pytest.raises(ValueError, match="must be 0/1"):
    valor_labels.read_valor_labels(tmp_path, ["aaaaaaaaaaa"])
  np.save(bad, np.zeros((10, 24), np.float32))
  with pytest.raises(ValueError, match=r"shape \(10, 24\)"):
    valor_labels.read_valor_labels(tmp_path, ["aaaaaaaaaaa"])
