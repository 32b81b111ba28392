"""parallel_map: one function over many files on grain's threads, in order.

grain (and with it jax) is imported only when threads run: ear_jax.data
stays importable without jax."""

from __future__ import annotations

import threading
from typing import Callable, Sequence, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def parallel_map(fn: Callable[[_T], _R], items: Sequence[_T],
                 num_workers: int) -> list[_R]:
  """[fn(x) for x in items], on `num_workers` threads; results in order.

  If calls fail, the first of their exceptions in `items` order is
  re-raised unchanged, once the calls already running have finished; items
  not yet started are skipped. fn's errors should name their file.
  num_workers <= 1 (or a single item) runs serially in this thread.
  """
  items = list(items)
  num_workers = min(int(num_workers), len(items))
  if num_workers <= 1:
    return [fn(x) for x in items]

  import grain  # pylint: disable=g-import-not-at-top  (pulls in jax)

  stop = threading.Event()

  def call(x):
    # Returns (ok, value or exception): grain drops None results and adds
    # a note to, and trims the traceback of, exceptions raised inside it.
    if stop.is_set():
      return (False, None)
    try:
      return (True, fn(x))
    except BaseException as e:  # pylint: disable=broad-exception-caught
      stop.set()
      return (False, e)

  ds = grain.MapDataset.source(items).map(call).to_iter_dataset(
      grain.ReadOptions(num_threads=num_workers,
                        prefetch_buffer_size=2 * num_workers))
  it = iter(ds)
  results, error = [], None
  try:
    for ok, value in it:  # after a failure: drains, skipped items are cheap
      if ok:
        results.append(value)
      elif error is None:
        error = value
  finally:
    stop.set()
    it.close()
  if error is not None:
    raise error
  return results
