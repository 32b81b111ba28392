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


@pytest.fixture(scope="module")
def valor_llp(tmp_path_factory):
  """A tiny synthetic LLP set and VALOR-layout labels (GT within weak)."""
  from ear_jax.data import avvp  # pylint: disable=g-import-not-at-top
  from ear_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("valor")
  synthetic.write_synthetic(root / "data", seed=4, num_llp=(16, 8, 8),
                            num_unav=(1, 1, 1), han_features=False)
  llp = root / "data" / "LLP"
  rng = np.random.default_rng(1)
  rec = avvp.read_llp_split(str(llp), "train")
  for sub in (valor_labels.AUDIO_DIR, valor_labels.VISUAL_DIR):
    (root / "valor" / sub).mkdir(parents=True)
    for vid, w in zip(rec.ids, rec.weak):
      x = (rng.random((10, 25)) < 0.5) * w[None, :]
      np.save(root / "valor" / sub / f"{vid}.npy", x.astype(np.float32))
  return str(llp), str(root / "valor")


def test_stage3_trains_on_valor_labels(tmp_path, valor_llp):
  """Table VI "HAN (VALOR)": stage 3 on VALOR's binary labels."""
  from ear_jax.configs import stage3 as stage3_config  # pylint: disable=g-import-not-at-top
  from ear_jax import writer as writer_lib  # pylint: disable=g-import-not-at-top
  from ear_jax.stages import train_parser  # pylint: disable=g-import-not-at-top
  llp, valor = valor_llp
  c = stage3_config.get_config("tiny")
  c.workdir, c.data.llp_root, c.pseudo_labels_dir = str(tmp_path), llp, valor
  c.model.name, c.data.features, c.progress = "han", "clip_clap", False
  c.pseudo_labels_format = "valor"
  with pytest.raises(ValueError, match="--config.loss.use_soft=False"):
    train_parser.run(c)
  c.loss.update(use_soft=False, hard_targets="labels", use_reweight=False,
                use_mixup=False)
  c.model.dropout, c.total_epochs = 0.0, 1
  train_parser.run(c)
  rows = writer_lib.read_metrics(c.workdir)
  assert {"train/seg_a", "train/seg_v"} <= set().union(*rows)
  assert (tmp_path / "eval" / "test.json").is_file()
