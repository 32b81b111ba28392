"""Tests for ear_jax.data.parallel.parallel_map (grain's threaded map)."""

import subprocess
import sys
import threading
import time

import pytest

from ear_jax.data import parallel


def test_results_in_item_order_on_several_threads():
  barrier = threading.Barrier(2, timeout=10)  # two calls must overlap
  threads = set()

  def fn(x):
    threads.add(threading.get_ident())
    if x < 2:
      barrier.wait()
    time.sleep(0.002 * (x % 5))  # finish out of order
    return x * x

  items = list(range(40))
  assert parallel.parallel_map(fn, items, 4) == [x * x for x in items]
  assert threading.get_ident() not in threads and len(threads) > 1


def test_none_results_are_kept():
  # grain's map drops None elements; parallel_map must not.
  assert parallel.parallel_map(lambda x: None, range(7), 3) == [None] * 7
  assert parallel.parallel_map(lambda x: x or None, [0, 1, 0], 2) == [
      None, 1, None]


@pytest.mark.parametrize("num_workers", [1, 4])
def test_first_error_in_item_order_propagates_unchanged(num_workers):
  raised = {}
  running, calls = [0], []
  lock = threading.Lock()

  def fn(path):
    with lock:
      running[0] += 1
      calls.append(path)
    try:
      if path == "3.npy":
        time.sleep(0.05)  # fails after 5.npy has failed
      time.sleep(0.001)
      if path in ("3.npy", "5.npy"):
        raised[path] = ValueError(f"{path}: shape (2,); expected (10, 25).")
        raise raised[path]
      return path
    finally:
      with lock:
        running[0] -= 1

  items = [f"{i}.npy" for i in range(200)]
  with pytest.raises(ValueError) as info:
    parallel.parallel_map(fn, items, num_workers)
  assert info.value is raised["3.npy"]
  assert str(info.value) == "3.npy: shape (2,); expected (10, 25)."
  assert not getattr(info.value, "__notes__", None)  # no grain note added
  assert running[0] == 0  # nothing still running after the raise
  assert len(calls) < len(items)  # the rest was skipped
  time.sleep(0.05)
  assert running[0] == 0 and len(calls) < len(items)


def test_base_exceptions_propagate():
  def fn(x):
    if x == 2:
      raise KeyboardInterrupt
    return x

  with pytest.raises(KeyboardInterrupt):
    parallel.parallel_map(fn, range(10), 3)


def test_serial_path_runs_in_this_thread_without_jax():
  # num_workers <= 1 (or one item) needs neither grain nor jax.
  code = (
      "import sys, threading\n"
      "from ear_jax.data import parallel, features, pseudo_label_files,"
      " valor_labels, synthetic\n"
      "me = threading.get_ident()\n"
      "def fn(x):\n"
      "  assert threading.get_ident() == me\n"
      "  return x + 1\n"
      "assert parallel.parallel_map(fn, [3, 1, 2], 1) == [4, 2, 3]\n"
      "assert parallel.parallel_map(fn, [5], 8) == [6]\n"
      "assert parallel.parallel_map(fn, [], 8) == []\n"
      "assert 'jax' not in sys.modules and 'grain' not in sys.modules\n"
      "print('ok')\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=False, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
