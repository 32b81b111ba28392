"""Spread over seeds: mean, std, Student-t 95% CIs and paired comparisons.

Numpy only (no scipy): the t quantile comes from the regularised incomplete
beta function, and the paired test enumerates every sign flip (exact).
"""
# pylint: disable=invalid-name

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np

# Sign flips are enumerated exactly up to this many pairs (2^20 patterns).
MAX_EXACT_PAIRS = 20


def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta function (modified Lentz)."""
  tiny, eps = 1e-300, 1e-15
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 1000):
    m2 = 2 * m
    aa = m * (b - m) * x / ((qam + m2) * (a + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    h *= d * c
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    delta = d * c
    h *= delta
    if abs(delta - 1.0) < eps:
      break
  return h


def betainc(a: float, b: float, x: float) -> float:
  """Regularised incomplete beta I_x(a, b), a, b > 0, 0 <= x <= 1."""
  if not 0.0 <= x <= 1.0:
    raise ValueError(f"betainc: x={x} is outside [0, 1].")
  if x in (0.0, 1.0):
    return x
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
               + a * math.log(x) + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _betacf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
  """P(T <= t) for Student's t with `df` degrees of freedom."""
  tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
  return 1.0 - tail if t >= 0 else tail


def t_ppf(q: float, df: float) -> float:
  """The q-quantile of Student's t (bisection on t_cdf; ~1e-12 absolute)."""
  if not 0.0 < q < 1.0 or df <= 0:
    raise ValueError(f"t_ppf: q={q} must be in (0, 1) and df={df} > 0.")
  if q < 0.5:
    return -t_ppf(1.0 - q, df)
  lo, hi = 0.0, 1.0
  while t_cdf(hi, df) < q:
    hi *= 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if t_cdf(mid, df) < q:
      lo = mid
    else:
      hi = mid
    if hi - lo < 1e-13 * max(1.0, hi):
      break
  return 0.5 * (lo + hi)


def ci95_half_width(values: Sequence[float]) -> float | None:
  """Student-t 95% half-width of the mean: t_{0.975, n-1} s / sqrt(n).

  None for fewer than two values (no spread can be estimated).
  """
  x = np.asarray(values, np.float64)
  n = x.size
  if n < 2:
    return None
  return float(t_ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n))


def describe(values: Sequence[float]) -> dict:
  """{"n", "mean", "std" (sample, ddof=1), "ci95"} of one metric's values;
  std and ci95 are None for a single value."""
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f"describe: expected a non-empty list of numbers; got"
                     f" shape {x.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"describe: non-finite values {x.tolist()}.")
  n = int(x.size)
  return dict(n=n, mean=float(x.mean()),
              std=float(x.std(ddof=1)) if n > 1 else None,
              ci95=ci95_half_width(x))


def summarize(per_seed: Mapping[str, Sequence[float]]) -> dict:
  """{"mean": {metric: v}, "std": {...}, "ci95": {...}} over seeds.

  Every metric must have the same number of values (one per seed).
  """
  lengths = {k: len(v) for k, v in per_seed.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f"summarize: metrics have different seed counts"
                     f" {lengths}.")
  out = {"mean": {}, "std": {}, "ci95": {}}
  for k, v in per_seed.items():
    d = describe(v)
    for stat in out:
      out[stat][k] = d[stat]
  return out


def sign_flip_p_value(diffs: Sequence[float]) -> float:
  """Exact two-sided paired permutation p-value of mean(diffs) = 0.

  Under the null each pair's sign is exchangeable: p is the share of the
  2^n sign patterns whose |mean| is at least the observed one (ties within
  1e-12 relative count as at least). The smallest attainable p is 2 / 2^n.
  """
  d = np.asarray(diffs, np.float64)
  n = d.size
  if n == 0:
    raise ValueError("sign_flip_p_value: no pairs.")
  if n > MAX_EXACT_PAIRS:
    raise ValueError(f"sign_flip_p_value: {n} pairs; the exact test"
                     f" enumerates 2^n patterns, at most {MAX_EXACT_PAIRS}"
                     " pairs.")
  observed = abs(d.sum())
  signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
  sums = np.abs(signs @ d)
  tol = 1e-12 * max(1.0, observed)
  return float(np.mean(sums >= observed - tol))


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
  """b - a over paired seeds: {"n", "mean", "std", "ci95", "p"}."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"paired: a {a.shape} and b {b.shape} must be two lists"
                     " of the same length (one value per paired seed).")
  d = b - a
  out = describe(d)
  out["p"] = sign_flip_p_value(d)
  return out
