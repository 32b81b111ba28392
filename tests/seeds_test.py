"""Seeds as an axis: an N-seed fit equals the N single-seed fits; stage 1,
2 and 3 with seeds; pseudo-label sets; errors; the mean ± std tables."""

import json
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ear_jax.configs import stage1 as stage1_config
from ear_jax.configs import stage2 as stage2_config
from ear_jax import checkpoint as ckpt_lib
from ear_jax import evaluator as evaluator_lib
from ear_jax import metrics as metrics_lib
from ear_jax import stats as stats_lib
from ear_jax import trainer as trainer_lib
from ear_jax import validate as validate_lib
from ear_jax import writer as writer_lib
from ear_jax.data import pseudo_label_files as pl_files
from ear_jax.data import synthetic
from ear_jax.stages import generate_pseudo_labels
from ear_jax.stages import pretrain_generator
from ear_jax.stages import train_parser
import stage3_test
import trainer_test


# Seed k of an N-seed fit vs the single-seed fit (see the first test).
RTOL, ATOL = 1e-5, 1e-7


Toy = trainer_test.Toy  # Linear, BatchNorm, Dropout, Linear


def _make_model(seed=None):
  return Toy(nnx.Rngs(0 if seed is None else seed))


def _data(n=37):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 3)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
  return dict(x=x, y=y)


def _loss_fn(model, batch, key, args):
  pred = model(batch["x"], deterministic=False, rngs=nnx.Rngs(dropout=key))
  m = batch["video_mask"]
  err = (pred - batch["y"] - args["shift"]) ** 2
  loss = jnp.sum(m * err) / jnp.maximum(m.sum(), 1.0)
  return loss, {"loss/mse": loss}


def _score(weights):
  return {"val/score": float(jnp.tanh(jnp.sum(weights["params"]["l2"][
      "kernel"][...])) + 1.0)}


def _config(workdir, seed=3, num_seeds=1, epochs=4):
  # pylint: disable-next=protected-access
  c = trainer_test._config(str(workdir), epochs)
  c.seed = seed
  c.num_seeds = num_seeds
  return c


def _fit(config, shift, evaluate=_score, seed_axes=None):
  data = _data()
  return trainer_lib.fit(
      config, make_model=_make_model, loss_fn=_loss_fn,
      make_batch=evaluator_lib.gather, train_data=data,
      num_train=len(data["x"]), evaluate=evaluate,
      best_metric="val/score", loss_args={"shift": shift},
      seed_axes=seed_axes)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _train_rows(workdir):
  return [r for r in writer_lib.read_metrics(str(workdir))
          if "train/loss" in r]


def test_n_seed_fit_equals_single_seed_fits(tmp_path):
  """Seed k of a 3-seed fit (per-seed loss_args) = the fit with seed 3 + k.

  Not bit-identical on XLA:CPU: the vmapped program lowers the batch
  reductions (BatchNorm statistics, the gradient sums of the matmuls) to
  batched ops whose float32 summation order differs by an ulp here and
  there; after these 20 Adam steps the weights differ by at most 6e-8
  absolute, 2e-6 relative. Hence RTOL; the initial weights and the data
  order are exact.
  """
  shifts = np.asarray([0.0, 0.5, -0.5], np.float32)
  multi = _fit(_config(tmp_path / "multi", num_seeds=3),
               shifts, seed_axes=trainer_lib.SeedAxes(
                   loss_args=True))
  assert multi.seeds == [3, 4, 5] and len(multi.best_step) == 3
  # Exact at the start: init_states(seeds) = init_state(seed) per seed.
  tx, _ = trainer_lib.make_optimizer(_config(tmp_path).optim, 5, 4)
  repl = jax.sharding.NamedSharding(
      jax.sharding.Mesh(np.asarray(jax.devices()), ("data",)),
      jax.sharding.PartitionSpec())
  init = trainer_lib.init_states(_make_model, tx, [3, 4, 5], repl)
  for k in range(3):
    for a, b in zip(_leaves(trainer_lib.seed_slice(init, k)), _leaves(
        trainer_lib.init_state(_make_model, tx, 3 + k, repl))):
      np.testing.assert_array_equal(a, b)
  rows = _train_rows(tmp_path / "multi")
  for k in range(3):
    single = _fit(_config(tmp_path / f"s{k}", seed=3 + k), shifts[k])
    assert multi.best_step[k] == single.best_step
    assert multi.best_value[k] == pytest.approx(single.best_value, rel=RTOL)
    assert multi.final_step == single.final_step
    for a, b in zip(_leaves(trainer_lib.seed_slice(multi.weights, k)),
                    _leaves(single.weights)):
      np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    srows = _train_rows(tmp_path / f"s{k}")
    assert [r["step"] for r in rows] == [r["step"] for r in srows]
    np.testing.assert_allclose([r[f"seed_{k}/train/loss"] for r in rows],
                               [r["train/loss"] for r in srows], rtol=RTOL)
  # The usual keys hold the mean over seeds.
  np.testing.assert_allclose(
      [r["train/loss"] for r in rows],
      [np.mean([r[f"seed_{k}/train/loss"] for k in range(3)]) for r in rows],
      rtol=1e-6)
  evals = [r for r in writer_lib.read_metrics(str(tmp_path / "multi"))
           if "val/score" in r]
  assert evals[-1]["val/score"] == pytest.approx(
      np.mean([evals[-1][f"seed_{k}/val/score"] for k in range(3)]))


def test_map_mode_is_bit_identical_to_single_seed_fits(tmp_path):
  """seed_mode="map": the seeds run one after another inside the program
  (lax.map), each the one-seed program: weights, losses and scores equal
  the single-seed fits exactly, where vmap differs by float32 ulps."""
  shifts = np.asarray([0.0, 0.5, -0.5], np.float32)
  config = _config(tmp_path / "multi", num_seeds=3)
  config.seed_mode = "map"
  multi = _fit(config, shifts, seed_axes=trainer_lib.SeedAxes(loss_args=True))
  rows = _train_rows(tmp_path / "multi")
  vmapped = _fit(_config(tmp_path / "vmap", num_seeds=3), shifts,
                 seed_axes=trainer_lib.SeedAxes(loss_args=True))
  differs = False
  for k in range(3):
    single = _fit(_config(tmp_path / f"s{k}", seed=3 + k), shifts[k])
    assert multi.best_step[k] == single.best_step
    assert multi.best_value[k] == single.best_value
    for a, b, v in zip(_leaves(trainer_lib.seed_slice(multi.weights, k)),
                       _leaves(single.weights),
                       _leaves(trainer_lib.seed_slice(vmapped.weights, k))):
      np.testing.assert_array_equal(a, b)
      differs |= not np.array_equal(v, b)
    assert [r[f"seed_{k}/train/loss"] for r in rows] == [
        r["train/loss"] for r in _train_rows(tmp_path / f"s{k}")]
  # The two modes are different programs (else this test proves nothing).
  assert differs
  with pytest.raises(validate_lib.ConfigError, match="seed_mode"):
    bad = _config(tmp_path / "bad", num_seeds=2)
    bad.seed_mode = "pmap"
    validate_lib.check(bad)


class _Killed(Exception):
  pass


def test_n_seed_resume_equals_uninterrupted(tmp_path, monkeypatch):
  """Killed after epoch 2's checkpoint, the same call resumes and ends as
  the uninterrupted 2-seed run: weights, per-seed selection, logs."""
  full = _fit(_config(tmp_path / "full", num_seeds=2), 0.0)
  original = ckpt_lib.Checkpointer.save
  calls = {"n": 0}

  def save_then_die(self, step, state, meta):
    original(self, step, state, meta)
    calls["n"] += 1
    if calls["n"] == 2:
      self.wait()
      raise _Killed()

  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save_then_die)
  with pytest.raises(_Killed):
    _fit(_config(tmp_path / "part", num_seeds=2), 0.0)
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", original)
  part = _fit(_config(tmp_path / "part", num_seeds=2), 0.0)
  assert part.best_step == full.best_step
  assert part.best_value == full.best_value
  for a, b in zip(_leaves(full.weights), _leaves(part.weights)):
    np.testing.assert_array_equal(a, b)
  a, b = _train_rows(tmp_path / "full"), _train_rows(tmp_path / "part")
  assert a == b
  meta = ckpt_lib.read_meta(str(tmp_path / "part" / "checkpoints"),
                            full.final_step)
  assert meta["num_seeds"] == 2 and meta["seeds"] == [3, 4]
  assert meta["best_step"] == full.best_step


# ------------------------------------------------------------- stages 1-3
KEYS = metrics_lib.AGGREGATE_KEYS + ("avg",)


def _read(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def llp_sets(tmp_path_factory):
  """(llp_root, a stage-2 dir with 2 sets): synthetic LLP, fake stage 2."""
  root = tmp_path_factory.mktemp("seeds_llp")
  synthetic.write_synthetic(root / "data", seed=3, num_llp=(16, 8, 8),
                            num_unav=(1, 1, 1))
  llp_root = str(root / "data" / "LLP")
  s2 = root / "s2"
  for k in range(2):
    stage3_test.write_fake_stage2(pl_files.seed_set_dir(s2, k), llp_root,
                                  seed=10 + k)
  pl_files.write_seeds_manifest(s2, dict(num_seeds=2, seeds=[0, 1],
                                         sets=["seeds/0", "seeds/1"]))
  return llp_root, str(s2)


def _s3(workdir, llp_root, pseudo_dir, seed=20000, num_seeds=1):
  c = stage3_test.tiny_config(workdir, llp_root, pseudo_dir, "han",
                              "clip_clap")
  c.seed = seed
  c.num_seeds = num_seeds
  return c


def test_stage3_pairs_seed_k_with_set_k(tmp_path, llp_sets, monkeypatch):
  """2 seeds on 2 sets: seed k's val/test scores and best step equal the
  one-seed run of seed 20000 + k on set k; 2 seeds on 1 set: seed 0 equals
  that run on set 0. Scores are thresholded, so the ~1e-6 weight
  differences (see above) leave them equal here. Killed after its first
  checkpoint, the 2-seed run resumes to the same files."""
  llp_root, s2 = llp_sets
  multi = _s3(tmp_path / "multi", llp_root, s2, num_seeds=2)
  multi.checkpoint_every_epochs = 1
  train_parser.run(multi)
  original = ckpt_lib.Checkpointer.save

  def save_then_die(self, step, state, meta):
    original(self, step, state, meta)
    self.wait()
    raise _Killed()

  part = _s3(tmp_path / "part", llp_root, s2, num_seeds=2)
  part.checkpoint_every_epochs = 1
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save_then_die)
  with pytest.raises(_Killed):
    train_parser.run(part)
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", original)
  train_parser.run(part)
  for name in ("val.json", "test.json", "val_seeds.json", "test_seeds.json"):
    a = _read(os.path.join(multi.workdir, "eval", name))
    b = _read(os.path.join(part.workdir, "eval", name))
    assert {k: v for k, v in a.items() if k != "pseudo_labels_dir"} == {
        k: v for k, v in b.items() if k != "pseudo_labels_dir"}, name
  assert _train_rows(multi.workdir) == _train_rows(part.workdir)
  shared = _s3(tmp_path / "shared", llp_root, pl_files.seed_set_dir(s2, 0),
               num_seeds=2)
  train_parser.run(shared)
  for k in range(2):
    single = _s3(tmp_path / f"s{k}", llp_root, pl_files.seed_set_dir(s2, k),
                 seed=20000 + k)
    train_parser.run(single)
    for split in ("val", "test"):
      one = _read(os.path.join(single.workdir, "eval", f"{split}.json"))
      spread = _read(os.path.join(multi.workdir, "eval",
                                  f"{split}_seeds.json"))
      assert spread["seeds"] == [20000, 20001]
      assert spread["step"][k] == one["step"], split
      assert spread["checkpoint"][k] == one["checkpoint"]
      for key in KEYS:
        assert spread["per_seed"][key][k] == pytest.approx(one[key],
                                                           abs=1e-9), key
      if k == 0:
        same = _read(os.path.join(shared.workdir, "eval",
                                  f"{split}_seeds.json"))
        for key in KEYS:
          assert same["per_seed"][key][0] == pytest.approx(one[key], abs=1e-9)
        assert same["num_pseudo_label_sets"] == 1
  # eval/<split>.json: the ten keys hold the mean; _seeds.json's summary is
  # stats.summarize of its per_seed lists.
  for split in ("val", "test"):
    mean = _read(os.path.join(multi.workdir, "eval", f"{split}.json"))
    spread = _read(os.path.join(multi.workdir, "eval", f"{split}_seeds.json"))
    summary = stats_lib.summarize(spread["per_seed"])
    for key in KEYS:
      assert mean[key] == pytest.approx(np.mean(spread["per_seed"][key]))
      for stat in ("mean", "std", "ci95"):
        assert spread[stat][key] == pytest.approx(summary[stat][key])
    assert mean["num_seeds"] == 2 and mean["seeds"] == [20000, 20001]
    assert spread["n"] == 2 and spread["split"] == split
  # A parse/evaluate of the run restores either seed's selected weights.
  from ear_jax import parser_lib  # pylint: disable=g-import-not-at-top
  *_, step1, which1 = parser_lib.load_parser(multi.workdir, seed_index=1)
  spread = _read(os.path.join(multi.workdir, "eval", "test_seeds.json"))
  assert (step1, which1) == (spread["step"][1], spread["checkpoint"][1])


def test_stage3_refuses_other_set_counts(tmp_path, llp_sets):
  llp_root, s2 = llp_sets
  for n in (3, 1):
    with pytest.raises(ValueError, match=f"holds 2 pseudo-label sets.*"
                       f"config.num_seeds={n}.*--config.num_seeds=2"):
      train_parser.run(_s3(tmp_path / f"n{n}", llp_root, s2, num_seeds=n))
  # One-set readers (evaluate of a stage-2 run) name the sets.
  with pytest.raises(FileNotFoundError, match="holds 2 pseudo-label sets.*"
                     "seeds/0"):
    pl_files.read_stage2(s2, [])
  # Sets without their manifest: a stage 2 stopped before the last set.
  unfinished = tmp_path / "unfinished"
  os.makedirs(unfinished / pl_files.SEEDS_DIR / "0")
  with pytest.raises(ValueError, match="unfinished.*Re-run stage 2"):
    pl_files.pseudo_label_sets(unfinished)


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_num_seeds_must_be_a_positive_int(value):
  c = stage1_config.get_config("tiny")
  c.workdir = "/tmp/unused"
  c.data.unav_root = "/tmp/unused"
  with c.ignore_type():
    c.num_seeds = value
  with pytest.raises(validate_lib.ConfigError,
                     match=r"--config.num_seeds=.*must be an integer >= 1"):
    validate_lib.check(c)
  with pytest.raises(ValueError, match="num_seeds"):
    trainer_lib.seed_list(c)


def test_seed_table_prints_mean_std_and_n():
  one = {k: 50.0 + i for i, k in enumerate(metrics_lib.AGGREGATE_KEYS)}
  two = {k: 52.0 + i for i, k in enumerate(metrics_lib.AGGREGATE_KEYS)}
  spread = metrics_lib.seeds_row([one, two], [7, 8])
  assert spread["std"]["seg_a"] == pytest.approx(np.std([50.0, 52.0],
                                                        ddof=1))
  assert spread["ci95"]["seg_a"] == pytest.approx(
      stats_lib.t_ppf(0.975, 1) * np.sqrt(2.0) / np.sqrt(2))
  table = metrics_lib.format_table({"EAR": spread, "weak": one})
  lines = table.splitlines()
  assert lines[3].startswith("EAR (n=2) | 51.0 ± 1.4 ")
  assert "50.0" in lines[4] and "±" not in lines[4]
  # Rows of one run print exactly as before.
  assert metrics_lib.format_table({"weak": one}).splitlines()[3] == (
      "weak   |  50.0  51.0  52.0  53.0  54.0 |  55.0  56.0  57.0  58.0  59.0"
      " |  54.5")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("seeds_synth")
  synthetic.write_synthetic(root, seed=1, num_llp=(16, 8, 8),
                            num_unav=(24, 8, 4), unav_max_duration=14,
                            han_features=False)
  return root


def _s1(workdir, root, seed=1000, num_seeds=1):
  c = stage1_config.get_config("tiny")
  c.workdir = str(workdir)
  c.data.unav_root = str(root / "UnAV")
  c.seed = seed
  c.num_seeds = num_seeds
  c.checkpoint_every_epochs = c.total_epochs
  c.progress = False
  return c


def _s2(workdir, s1_workdir, root):
  c = stage2_config.get_config("tiny")
  c.workdir = str(workdir)
  c.generator_workdir = str(s1_workdir)
  c.data.llp_root = str(root / "LLP")
  c.progress = False
  return c


def test_stage1_seeds_and_stage2_sets(tmp_path, synth_root):
  """A 2-seed stage 1: seed 1 equals the one-seed run of seed 1001 (UnAV
  scores, best step); stage 2 on it writes 2 sets, set 1 equal to stage 2
  on that one-seed run: labels and scores exactly, logits and thresholds
  to the ~1e-6 relative float32 differences of vmapped training (see
  test_n_seed_fit_equals_single_seed_fits)."""
  multi = _s1(tmp_path / "s1_multi", synth_root, num_seeds=2)
  pretrain_generator.run(multi)
  single = _s1(tmp_path / "s1_single", synth_root, seed=1001)
  pretrain_generator.run(single)
  spread = _read(os.path.join(multi.workdir, "eval",
                              "unav_validation_seeds.json"))
  one = _read(os.path.join(single.workdir, "eval", "unav_validation.json"))
  assert spread["seeds"] == [1000, 1001]
  assert spread["best_step"][1] == one["best_step"]
  for key in ("seg_av", "evt_av"):
    assert spread["per_seed"][key][1] == pytest.approx(one[key], abs=1e-9)
  mean = _read(os.path.join(multi.workdir, "eval", "unav_validation.json"))
  assert mean["seg_av"] == pytest.approx(np.mean(spread["per_seed"]["seg_av"]))

  s2 = _s2(tmp_path / "s2_multi", multi.workdir, synth_root)
  generate_pseudo_labels.run(s2)
  manifest = pl_files.read_seeds_manifest(s2.workdir)
  assert manifest["num_seeds"] == 2 and manifest["seeds"] == [1000, 1001]
  assert pl_files.pseudo_label_sets(s2.workdir) == [
      pl_files.seed_set_dir(s2.workdir, k) for k in range(2)]
  assert not os.path.exists(pl_files.llp_dir(s2.workdir))
  s2_one = _s2(tmp_path / "s2_single", single.workdir, synth_root)
  generate_pseudo_labels.run(s2_one)
  ids = _read(os.path.join(pl_files.llp_dir(s2_one.workdir),
                           "manifest.json"))["ids"]["train"]
  a = pl_files.read_stage2(pl_files.seed_set_dir(s2.workdir, 1), ids)
  b = pl_files.read_stage2(s2_one.workdir, ids)
  np.testing.assert_allclose(a["a_logit"], b["a_logit"], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(a["a_label"], b["a_label"])
  for m in ("a", "v"):  # cuts between logits: the same float32 rounding
    np.testing.assert_allclose(a[f"thresholds_{m}"], b[f"thresholds_{m}"],
                               rtol=1e-5, atol=1e-5)
  for split in ("val", "test"):
    x = _read(os.path.join(pl_files.seed_set_dir(s2.workdir, 1), "eval",
                           f"{split}.json"))
    y = _read(os.path.join(s2_one.workdir, "eval", f"{split}.json"))
    for key in KEYS:
      assert x[key] == pytest.approx(y[key], abs=1e-9), (split, key)
    top = _read(os.path.join(s2.workdir, "eval", f"{split}_seeds.json"))
    assert top["per_seed"]["avg"][1] == pytest.approx(y["avg"])
  # The same command again: everything is up to date.
  before = os.path.getmtime(os.path.join(s2.workdir,
                                         pl_files.SEEDS_MANIFEST))
  generate_pseudo_labels.run(s2)
  assert os.path.getmtime(os.path.join(
      s2.workdir, pl_files.SEEDS_MANIFEST)) == before


def test_n_seed_fit_refuses_a_one_seed_checkpoint(tmp_path):
  """A workdir of a one-seed run (e.g. a config.json without num_seeds,
  accepted as harmless) is refused, not mistaken for a corrupt one."""
  old = _config(tmp_path, epochs=1)
  del old["num_seeds"]  # a config of an ear-jax without the field
  _fit(old, 0.0)
  new = _config(tmp_path, num_seeds=2, epochs=1)
  new.override_config = True  # a field missing from config.json: harmless
  with pytest.raises(ckpt_lib.CheckpointError, match=r"seed\(s\) \[3\];.*"
                     r"seeds \[3, 4\]"):
    _fit(new, 0.0)
  assert not any(n.endswith(".corrupt")
                 for n in os.listdir(tmp_path / "checkpoints"))


_TRACES = []


def _counting_loss(model, batch, key, args):
  _TRACES.append(1)  # runs only while tracing
  return _loss_fn(model, batch, key, args)


def test_n_seed_fits_share_one_executable(tmp_path, monkeypatch):
  """Other seeds and per-seed loss_args reuse the cached vmapped epoch."""
  monkeypatch.setattr(trainer_lib, "_EPOCH_FNS", {})
  _TRACES.clear()
  data = _data()
  for k, seed in enumerate((3, 9)):
    trainer_lib.fit(
        _config(tmp_path / f"run{k}", seed=seed, num_seeds=2, epochs=1),
        make_model=_make_model, loss_fn=_counting_loss,
        make_batch=evaluator_lib.gather, train_data=data,
        num_train=len(data["x"]),
        loss_args={"shift": np.asarray([k, -k], np.float32)},
        seed_axes=trainer_lib.SeedAxes(loss_args=True))
  assert len(_TRACES) == 1, "the second N-seed fit retraced its epoch"
  (epoch_fn,) = trainer_lib._EPOCH_FNS.values()  # pylint: disable=protected-access
  assert epoch_fn._cache_size() == 1  # pylint: disable=protected-access
