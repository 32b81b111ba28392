"""New data never recompiles: seeds, stage-2 thresholds and class
frequencies are arguments of the jitted epoch (one trace, one executable)."""

from flax import nnx
import jax
import numpy as np

from ear_jax.configs import common
from ear_jax.configs import stage3
from ear_jax import evaluator as evaluator_lib
from ear_jax import losses as losses_lib
from ear_jax import parser_lib
from ear_jax import train_state as ts_lib
from ear_jax import trainer as trainer_lib

C, T, N = 25, 10, 16


def _config(workdir, seed):
  c = stage3.get_config("tiny")
  c.workdir = str(workdir)
  c.seed = seed
  c.total_epochs = 1
  c.progress = False
  c.data.features = "clip_clap"  # 512 / 768 inputs
  c.model.name = "han"  # the cheaper parser to compile; the same trainer
  return c


def _stats(rng):
  th = np.where(rng.random(C) < 0.2, -np.inf, rng.standard_normal(C))
  return parser_lib.loss_args(th, rng.standard_normal(C), rng.random(C) * 0.1,
                              rng.random(C) * 0.1)


def _train(rng):
  return dict(
      audio=rng.standard_normal((N, T, 512)).astype(np.float32),
      visual=rng.standard_normal((N, T, 768)).astype(np.float32),
      weak=(rng.random((N, C)) < 0.2).astype(np.float32),
      a_logit=rng.standard_normal((N, T, C)).astype(np.float32),
      v_logit=rng.standard_normal((N, T, C)).astype(np.float32))


def test_two_fits_with_new_seed_and_pseudo_labels_share_one_executable(
    tmp_path, monkeypatch):
  traces = []
  real_loss = losses_lib.parser_loss

  def counting_loss(*a, **kw):
    traces.append(1)  # runs only while tracing
    return real_loss(*a, **kw)

  monkeypatch.setattr(losses_lib, "parser_loss", counting_loss)
  monkeypatch.setattr(trainer_lib, "_EPOCH_FNS", {})
  rng = np.random.default_rng(0)
  train = _train(rng)
  results = []
  for k, seed in enumerate((7, 8)):
    config = _config(tmp_path / f"run{k}", seed)
    results.append(trainer_lib.fit(
        config, make_model=parser_lib.model_factory(config),
        loss_fn=parser_lib.make_loss_fn(config), loss_args=_stats(rng),
        make_batch=evaluator_lib.gather, train_data=train, num_train=N))
  assert len(traces) == 1, "the second fit retraced its epoch"
  (epoch_fn,) = trainer_lib._EPOCH_FNS.values()  # pylint: disable=protected-access
  assert epoch_fn._cache_size() == 1  # pylint: disable=protected-access
  # The arguments are used: other seed and statistics, other weights.
  a, b = (jax.tree.leaves(r.weights["params"]) for r in results)
  assert any(not np.array_equal(x, y) for x, y in zip(a, b))


def test_loss_args_give_the_numbers_of_closed_over_constants():
  rng = np.random.default_rng(1)
  config = _config("/unused", 3)
  graphdef, state = nnx.split(parser_lib.model_factory(config)())
  batch = evaluator_lib.gather(
      {k: v[:8] for k, v in _train(rng).items()}, np.arange(8),
      np.ones(8, np.float32))
  stats = _stats(rng)
  loss = parser_lib.make_loss_fn(config)
  key = jax.random.key(2)
  as_args = jax.jit(lambda st, s: loss(nnx.merge(graphdef, st), batch, key,
                                       s)[0])(state, stats)
  as_consts = jax.jit(lambda st: loss(nnx.merge(graphdef, st), batch, key,
                                      stats)[0])(state)
  np.testing.assert_allclose(float(as_args), float(as_consts), rtol=1e-6)


def test_seed_is_an_argument_of_the_init_program():
  config = _config("/unused", 11)
  make_model = parser_lib.model_factory(config)
  tx, _ = trainer_lib.make_optimizer(common.optim(), 2, 2)
  repl = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  got = trainer_lib.init_state(make_model, tx, 11, repl)
  _, want = ts_lib.create_train_state(make_model, tx)  # eager, config.seed
  for x, y in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  other = trainer_lib.init_state(make_model, tx, 12, repl)
  assert any(not np.array_equal(x, y) for x, y in zip(
      jax.tree.leaves(got.params), jax.tree.leaves(other.params)))
