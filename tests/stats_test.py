"""ear_jax.stats: t quantiles, seed summaries, the exact paired test."""

import itertools

import numpy as np
import pytest

from ear_jax import stats


# Student t 0.975 quantiles (standard tables, 10+ digits).
@pytest.mark.parametrize("df,expected", [
    (1, 12.706204736174705), (2, 4.302652729749464),
    (4, 2.7764451051977934), (10, 2.2281388519862744),
    (30, 2.0422724563012373)])
def test_t_ppf_matches_tables(df, expected):
  assert stats.t_ppf(0.975, df) == pytest.approx(expected, rel=1e-10)
  assert stats.t_ppf(0.025, df) == pytest.approx(-expected, rel=1e-10)


def test_t_cdf_inverts_ppf_and_tends_to_normal():
  for df in (1, 3, 7.5, 50):
    for q in (0.6, 0.9, 0.995):
      assert stats.t_cdf(stats.t_ppf(q, df), df) == pytest.approx(q, abs=1e-12)
  assert stats.t_ppf(0.975, 1e6) == pytest.approx(1.959963985, abs=1e-5)


def test_describe_and_summarize():
  d = stats.describe([1.0, 2.0, 4.0])
  assert d["n"] == 3 and d["mean"] == pytest.approx(7 / 3)
  assert d["std"] == pytest.approx(np.std([1, 2, 4], ddof=1))
  assert d["ci95"] == pytest.approx(
      4.302652729749464 * d["std"] / np.sqrt(3), rel=1e-10)
  one = stats.describe([5.0])
  assert one == dict(n=1, mean=5.0, std=None, ci95=None)
  s = stats.summarize({"x": [1.0, 3.0], "y": [2.0, 2.0]})
  assert s["mean"] == {"x": 2.0, "y": 2.0}
  assert s["std"]["y"] == 0.0 and s["ci95"]["y"] == 0.0
  with pytest.raises(ValueError, match="different seed counts"):
    stats.summarize({"x": [1.0], "y": [1.0, 2.0]})
  with pytest.raises(ValueError, match="non-finite"):
    stats.describe([1.0, float("nan")])


def _brute_p(d):
  obs = abs(sum(d))
  hits = [abs(sum(s * x for s, x in zip(signs, d))) >= obs - 1e-12
          for signs in itertools.product((1, -1), repeat=len(d))]
  return sum(hits) / len(hits)


@pytest.mark.parametrize("diffs", [
    [0.3, 0.5, 0.2], [0.3, -0.5, 0.2, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0],
    [0.0, 0.0], [2.0, -1.0, 0.5, 0.25, -0.125, 3.0]])
def test_sign_flip_p_value_is_exact(diffs):
  assert stats.sign_flip_p_value(diffs) == pytest.approx(_brute_p(diffs))


def test_paired_direction_and_limits():
  r = stats.paired([1.0, 2.0, 3.0], [2.0, 3.0, 5.0])
  assert r["mean"] == pytest.approx(4 / 3)  # b - a, not a - b
  assert r["p"] == 0.25                       # 2 of 8 patterns: all +, all -
  assert stats.paired([0, 0, 0, 0, 0], [1, 1, 1, 1, 1])["p"] == 2 / 32
  with pytest.raises(ValueError, match="same length"):
    stats.paired([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="at most"):
    stats.sign_flip_p_value(np.ones(stats.MAX_EXACT_PAIRS + 1))
