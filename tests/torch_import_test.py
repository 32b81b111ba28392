"""PyTorch checkpoint import: imported runs work in eval / stage 2 / parse,
and every bad input names the parameter or field at fault."""
# pylint: disable=invalid-name

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
import pytest

from ear_jax.configs import eval as eval_config
from ear_jax.configs import import_torch as import_config
from ear_jax.configs import parse as parse_config
from ear_jax.configs import stage2 as stage2_config
from ear_jax.configs import stage3
from ear_jax import metrics as metrics_lib
from ear_jax import torch_import
from ear_jax import validate as validate_lib
from ear_jax import workdir as workdir_lib
from ear_jax.data import avvp
from ear_jax.data import features as features_lib
from ear_jax.data import synthetic
from ear_jax.stages import evaluate as evaluate_stage
from ear_jax.stages import generate_pseudo_labels as stage2
from ear_jax.stages import parse as parse_stage

torch = pytest.importorskip("torch")

DATA = pathlib.Path(__file__).parent / "testdata" / "parity"


def fixture(name: str, prefix: str = "") -> tuple[dict, dict]:
  with np.load(DATA / f"{name}.npz") as f:
    arrays = {k: f[k] for k in f.files}
  sd = {k[len(prefix) + 3:]: v.astype(np.float32) for k, v in arrays.items()
        if k.startswith(prefix + "sd/")}
  return sd, arrays


def save_pt(path, sd) -> str:
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()},
             path)
  return str(path)


def import_run(workdir, checkpoint, source, **overrides):
  """As launch.py runs it: validated, inside the workdir claim."""
  c = import_config.get_config()
  c.workdir, c.checkpoint, c.source = str(workdir), str(checkpoint), source
  c.update(overrides)
  validate_lib.check(c)
  with workdir_lib.claim(c):
    torch_import.run(c)
  return str(workdir)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
  """The synthetic LLP set the whole-model fixtures were computed on."""
  _, x = fixture("uwav_han_synthetic")
  root = tmp_path_factory.mktemp("parity_data")
  synthetic.write_synthetic(root, seed=int(x["cfg/seed"]),
                            num_llp=tuple(int(n) for n in x["cfg/num_llp"]),
                            num_unav=(4, 2, 2))  # as tools/ SYNTHETIC
  return root


FINGERPRINT_FEATURES = ("vggish", "res152", "r2plus1d_18", "clip", "clap")


def check_same_data(llp, x):
  """The synthetic set equals the one the fixture was computed on."""
  rec = avvp.read_llp_split(str(llp), "test")
  sums = [float(np.sum(features_lib.load_segment_features(str(llp), n,
                                                          rec.ids),
                       dtype=np.float64)) for n in FINGERPRINT_FEATURES]
  sums += [float(rec.weak.sum()), float(rec.gt_a.sum()),
           float(rec.gt_v.sum())]
  if not np.allclose(sums, x["in/data_fingerprint"], rtol=1e-6):
    raise AssertionError(
        "ear_jax/data/synthetic.py now writes other data than the parity"
        " fixtures were computed on (feature/label sums"
        f" {np.round(sums, 3).tolist()} vs"
        f" {np.round(x['in/data_fingerprint'], 3).tolist()}); regenerate with"
        " tools/make_parity_fixtures.py"
        " --only=uwav_generator_stage2,uwav_han_synthetic.")


def test_imported_uwav_han_evaluates_to_the_reference_metrics(
    tmp_path, synthetic_root):
  """configs/eval.py on the imported checkpoint == the reference HAN's own
  predictions through ear-jax's metrics (and UWAV's metric code)."""
  sd, x = fixture("uwav_han_synthetic")
  llp = synthetic_root / "LLP"
  check_same_data(llp, x)
  run = import_run(tmp_path / "han", save_pt(tmp_path / "best.pt", sd),
                   "uwav_han", num_heads=int(x["cfg/num_heads"]),
                   data=dict(llp_root=str(llp)))
  with open(os.path.join(run, "config.json")) as f:
    cfg = json.load(f)
  assert cfg["stage"] == "train_parser" and cfg["model"]["name"] == "han"
  assert cfg["imported"]["source"] == "uwav_han"
  assert cfg["eval"]["strict"] is True  # UWAV's `> 0.5`
  c = eval_config.get_config()
  c.workdir, c.run_workdir, c.split = str(tmp_path / "e"), run, "test"
  evaluate_stage.run(c)
  with open(tmp_path / "e" / "eval" / "test.json") as f:
    got = json.load(f)
  rec = avvp.read_llp_split(llp, "test")
  want = metrics_lib.avvp_scores(x["out/pred_a"], x["out/pred_v"], rec.gt_a,
                                 rec.gt_v)
  for k, v in want.items():
    assert got[k] == pytest.approx(v, abs=1e-9), k
    assert got[k] == pytest.approx(float(x[f"out/metrics/{k}"]), abs=1e-9), k
  # parse: the same parser, unchanged, on the same features.
  p = parse_config.get_config("tiny")
  p.workdir, p.parser_workdir = str(tmp_path / "p"), run
  p.features_root, p.timelines = str(llp), False
  p.ids = ",".join(rec.ids[:3])
  parse_stage.run(p)
  assert (tmp_path / "p" / "parsed" / f"{rec.ids[0]}.json").is_file()


def test_imported_uwav_generator_runs_stage2(tmp_path, synthetic_root):
  sd, x = fixture("uwav_generator")
  check_same_data(synthetic_root / "LLP", fixture("uwav_generator_stage2")[1])
  run = import_run(tmp_path / "gen", save_pt(tmp_path / "g.pt", sd),
                   "uwav_generator", num_heads=int(x["cfg/num_heads"]))
  c = stage2_config.get_config("tiny")
  c.workdir, c.generator_workdir = str(tmp_path / "s2"), run
  c.data.llp_root = str(synthetic_root / "LLP")
  c.threshold_precision = "float32"
  stage2.run(c)
  # UWAV's own stage 2 (main_pretrain.py pseudo_label_generation) with the
  # same weights on the same data: thresholds to float rounding (they are
  # midpoints of logits), binary pseudo-labels exactly, every split.
  _, ref = fixture("uwav_generator_stage2")
  root = tmp_path / "s2" / "LLP_Dataset"
  assert (root / "manifest.json").is_file()
  for m in ("a", "v"):
    theta = np.load(root / f"{m}_classwise_threhsolds.npy")
    want = ref[f"out/theta_{m}"]
    np.testing.assert_array_equal(np.isinf(theta), np.isinf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(theta[fin], want[fin], rtol=1e-5, atol=1e-6,
                               err_msg=f"thresholds {m}")
    for split in ("train", "val", "test"):
      ids = avvp.read_llp_split(synthetic_root / "LLP", split).ids
      got = np.stack([np.load(root / f"{m}_segmentwise_pseudo_labels"
                              / f"{i}.npy") for i in ids])
      np.testing.assert_array_equal(
          got, ref[f"out/{split}/{m}_label"],
          err_msg=f"{split} {m} pseudo-labels differ from UWAV's")
      logits = np.stack([np.load(root / f"{m}_segmentwise_logits"
                                 / f"{i}.npy") for i in ids])
      np.testing.assert_allclose(logits, ref[f"out/{split}/{m}_logit"],
                                 rtol=1e-5, atol=1e-5 * np.abs(logits).max())


# ------------------------------------------------------------- bad inputs
@pytest.fixture
def uwav_sd():
  return fixture("uwav_han")[0]


def _convert(source, sd, **kw):
  return torch_import.convert(source, sd, stage3.get_config(), num_heads=4,
                              **kw)


def test_unknown_parameter_is_named(uwav_sd):
  uwav_sd["fc_extra.weight"] = np.zeros((3, 3), np.float32)
  with pytest.raises(ValueError, match=r"unknown parameters \['fc_extra"):
    _convert("uwav_han", uwav_sd)


def test_missing_parameter_is_named(uwav_sd):
  del uwav_sd["hat_encoder.layers.1.norm2.bias"]
  with pytest.raises(ValueError,
                     match="no parameter 'hat_encoder.layers.1.norm2.bias'"):
    _convert("uwav_han", uwav_sd)


def test_shape_mismatch_is_named(uwav_sd):
  uwav_sd["fc_av_att.layers.0.weight"] = np.zeros((25, 7), np.float32)
  with pytest.raises(ValueError, match=r"shape mismatch for ear-jax parameter"
                     r" head/fc_av_att/kernel: checkpoint gives \(7, 25\)"):
    _convert("uwav_han", uwav_sd)


def test_wrong_source_names_the_missing_key_and_the_fix(uwav_sd):
  with pytest.raises(ValueError, match=r"no parameter 'fc_frame_att.weight'.*Pick the"
                     " matching --config.source"):
    _convert("han_eccv20", uwav_sd)
  with pytest.raises(ValueError, match="no parameter 'proj_a.layers.0"):
    torch_import.convert("uwav_generator", uwav_sd, stage3.get_config())


def test_unknown_source_lists_the_choices(uwav_sd):
  with pytest.raises(ValueError, match=r"config.source='uwav'; expected one"
                     r" of \['han_eccv20', 'uwav_generator', 'uwav_han',"):
    _convert("uwav", uwav_sd)


def test_heads_that_do_not_divide_the_width(uwav_sd):
  with pytest.raises(ValueError, match="num_heads=5 does not divide"):
    torch_import.convert("uwav_han", uwav_sd, stage3.get_config(),
                         num_heads=5)


def test_pre_norm_only_where_the_source_has_it():
  sd, _ = fixture("han_eccv20")
  with pytest.raises(ValueError, match="has no pre-norm variant"):
    _convert("han_eccv20", sd, pre_norm=True)
  cfg, _, _ = torch_import.convert("han_eccv20", sd, stage3.get_config())
  assert cfg.eval.strict is False  # the HAN code's `>= 0.5`


def test_wrong_class_count(uwav_sd):
  uwav_sd["fc_prob.weight"] = uwav_sd["fc_prob.weight"][:10]
  uwav_sd["fc_prob.bias"] = uwav_sd["fc_prob.bias"][:10]
  with pytest.raises(ValueError, match="fc_prob predicts 10 classes"):
    _convert("uwav_han", uwav_sd)


def test_inputs_of_no_feature_set(uwav_sd):
  w = uwav_sd["fc_fusion.layers.0.weight"]
  uwav_sd["fc_fusion.layers.0.weight"] = w[:, :1280]
  with pytest.raises(ValueError, match="match no ear-jax feature set"):
    _convert("uwav_han", uwav_sd)


def test_not_a_state_dict(tmp_path):
  path = tmp_path / "x.pt"
  torch.save([1, 2, 3], path)
  with pytest.raises(ValueError, match="expected a non-empty state dict"):
    torch_import.load_torch_state_dict(str(path))
  with pytest.raises(FileNotFoundError, match="is not a file"):
    torch_import.load_torch_state_dict(str(tmp_path / "missing.pt"))


def test_wrapped_and_data_parallel_state_dicts():
  sd = {"module.fc.weight": torch.ones(2, 2)}
  assert list(torch_import.state_dict_to_numpy({"state_dict": sd})) == [
      "fc.weight"]


def test_non_empty_workdir_is_refused(tmp_path, uwav_sd):
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "notes.txt").write_text("mine")
  pt = save_pt(tmp_path / "c.pt", uwav_sd)
  with pytest.raises(FileExistsError, match="is not empty"):
    import_run(tmp_path / "w", pt, "uwav_han", num_heads=4)
  run = import_run(tmp_path / "new", pt, "uwav_han", num_heads=4)
  with pytest.raises(workdir_lib.WorkdirError, match="'train_parser' run"):
    import_run(run, pt, "uwav_han", num_heads=4)  # imported once


def test_config_validation_names_the_source_field():
  c = import_config.get_config()
  c.workdir, c.checkpoint, c.source = "/tmp/w", "x.pt", "uwav_hann"
  with pytest.raises(ValueError, match="--config.source='uwav_hann'"):
    validate_lib.check(c)


def test_missing_torch_names_the_extra(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match=r"ear-jax\[export\]"):
    torch_import.load_torch_state_dict(str(tmp_path / "x.pt"))
