"""Export driver: video list, threaded decoding, batching, resume, manifest.

`run(config)` is the `export_features` stage: config.exporter picks the
exporter from registry.EXPORTERS; `export(config, exporter)` runs any
common.Exporter over config.videos_dir.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime
import json
import os
import pathlib
import queue
import threading
import time
from typing import Any, Callable, Iterator

from absl import logging
import numpy as np

from ear_jax import jsonio
from ear_jax.data import features as features_lib
from feature_export import common
from feature_export import decode as decode_lib
from feature_export import registry

# pylint: disable=invalid-name

MANIFEST = "export_manifest_{}.json"
MANIFEST_VERSION = 1


def run(config) -> dict[str, Any]:
  """Runs the exporter named by `config.exporter`; returns the manifest."""
  return export(config, registry.get_exporter(config))


# ----------------------------------------------------------------------------
# Per-video work items.


def list_videos(config, flag=None) -> list[tuple[str, str]]:
  """Sorted (id, path) of the videos in config.videos_dir.

  `flag(field)` names a config field in errors as the command line sets it
  (default `--config.<field>`; the parse stage's are other flags).
  """
  flag = flag or (lambda field: f"--config.{field}")
  root = pathlib.Path(config.videos_dir)
  if not root.is_dir():
    raise FileNotFoundError(f"{flag('videos_dir')}={root} is not a directory")
  exts = tuple(e.strip().lower() for e in config.video_extensions.split(","))
  paths = sorted(p for p in root.iterdir()
                 if p.is_file() and p.suffix.lower() in exts)
  if not paths:
    raise FileNotFoundError(
        f"no videos ({', '.join(exts)}) in {root}; set"
        f" {flag('video_extensions')} if yours differ"
    )
  n = config.id_length
  out, seen = [], {}
  for p in paths:
    vid = p.stem[:n] if n else p.stem
    if vid in seen:
      raise ValueError(
          f"videos {seen[vid]} and {p.name} map to the same id {vid!r}"
          f" ({flag('id_length')}={n})"
      )
    seen[vid] = p.name
    out.append((vid, os.fspath(p)))
  if config.limit:
    out = out[: config.limit]
  return out



def safe_prepare(exporter: common.Exporter, vid: str, path: str,
                 todo: tuple[str, ...], chunk_segments: int = 0
                 ) -> Iterator[common.Prepared]:
  """exporter.prepare's chunks; an exception (probing, an unexpected bug)
  ends the video with a failure of every feature not yet failed."""
  failed: set[str] = set()
  try:
    for prep in exporter.prepare(vid, path, todo, chunk_segments):
      failed |= set(prep.errors)
      yield prep
      if prep.last:
        return
    raise RuntimeError(f"{exporter.name}.prepare ended without a last chunk")
  except Exception as e:  # pylint: disable=broad-except
    reason = common.reason_of(e)
    yield common.Prepared(vid, path, errors={
        f: reason for f in todo if f not in failed}, last=True)


def prefetch_chunks(items: list[Any], gen_fn: Callable[[Any], Iterator[Any]],
                    num_workers: int, depth: int = 2) -> Iterator[Any]:
  """Everything gen_fn(item) yields, item after item, in order.

  With num_workers > 0, that many items are decoded ahead on threads, each
  at most `depth` chunks ahead of the consumer: memory holds about
  num_workers * (depth + 1) chunks, however long the videos. Threads, not
  processes: PyAV decodes with the GIL released, and workers share the
  exporter's preprocessors (HF processors, PIL) without pickling a
  torch/JAX model into child processes.
  """
  if num_workers <= 0 or len(items) <= 1:
    for item in items:
      yield from gen_fn(item)
    return
  end, stop = object(), threading.Event()

  def put(q, x):
    while not stop.is_set():
      try:
        q.put(x, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def work(item, q):
    try:
      for x in gen_fn(item):
        if not put(q, x):
          return
    except BaseException as e:  # pylint: disable=broad-except
      put(q, e)  # re-raised in the consumer
    put(q, end)

  pending = collections.deque()
  rest = iter(items)
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:

    def submit():
      item = next(rest, end)
      if item is not end:
        q = queue.Queue(maxsize=depth)
        pool.submit(work, item, q)
        pending.append(q)

    try:
      for _ in range(num_workers):
        submit()
      while pending:
        q = pending.popleft()
        submit()
        while (x := q.get()) is not end:
          if isinstance(x, BaseException):
            raise x
          yield x
    finally:
      stop.set()


# ----------------------------------------------------------------------------
# Batching rows of many videos through one encoder.


def _rows_len(rows) -> int:
  return len(next(iter(rows.values()))) if isinstance(rows, dict) else len(rows)


def _rows_slice(rows, lo, hi=None):
  if isinstance(rows, dict):
    return {k: v[lo:hi] for k, v in rows.items()}
  return rows[lo:hi]


def _rows_concat(parts, pad_to: int | None):
  """Concatenates row blocks (arrays or dicts of arrays), zero-padding."""
  if isinstance(parts[0], dict):
    return {k: _rows_concat([p[k] for p in parts], pad_to) for k in parts[0]}
  x = np.concatenate([np.asarray(p) for p in parts])
  if pad_to is not None and x.shape[0] < pad_to:
    x = np.concatenate(
        [x, np.zeros((pad_to - x.shape[0], *x.shape[1:]), x.dtype)])
  return x


class RowBatcher:
  """Concatenates per-video input rows into fixed-size model batches.

  `encode(x_Bx...) -> np [B, D]` sees exactly `batch_size` rows each call
  when `pad` (one compiled shape for jit); the last batch is zero-padded.
  `on_done(vid, out_NxD)` gets each video's rows once all are encoded: a
  video's rows may come in several `add` calls (chunks); the last has
  `last=True` (or `close(vid)` ends it).
  """

  def __init__(self, encode, batch_size: int, on_done, pad: bool):
    self.encode, self.batch_size, self.on_done = encode, batch_size, on_done
    self.pad = pad
    self.queue: collections.deque = collections.deque()  # (vid, rows)
    self.queued = 0
    self.outputs: dict[str, list[np.ndarray]] = {}
    self.remaining: dict[str, int] = {}
    self.closed: set[str] = set()
    self.order: list[str] = []
    self.rows_done = 0
    self.seconds = 0.0

  def add(self, vid: str, rows, last: bool = True) -> None:
    n = _rows_len(rows)
    if n == 0:
      raise ValueError(f"{vid}: no rows to encode")
    if vid in self.closed:
      raise ValueError(f"{vid}: rows added after its last chunk")
    if vid not in self.outputs:
      self.outputs[vid], self.remaining[vid] = [], 0
      self.order.append(vid)
    self.remaining[vid] += n
    self.queue.append((vid, rows))
    self.queued += n
    if last:
      self.closed.add(vid)
    while self.queued >= self.batch_size:
      self._step()

  def close(self, vid: str) -> None:
    """No more rows for `vid` (a no-op if it never had any)."""
    if vid in self.outputs:
      self.closed.add(vid)
      self._emit()

  def flush(self) -> None:
    while self.queued:
      self._step()

  def _step(self) -> None:
    take, parts, owners = self.batch_size, [], []
    while take and self.queue:
      vid, rows = self.queue[0]
      k = min(take, _rows_len(rows))
      parts.append(_rows_slice(rows, 0, k))
      owners.append((vid, k))
      if k == _rows_len(rows):
        self.queue.popleft()
      else:
        self.queue[0] = (vid, _rows_slice(rows, k))
      take -= k
    n = sum(k for _, k in owners)
    self.queued -= n
    x = _rows_concat(parts, self.batch_size if self.pad else None)
    start = time.perf_counter()
    y = np.asarray(self.encode(x))[:n]
    self.seconds += time.perf_counter() - start
    self.rows_done += n
    i = 0
    for vid, k in owners:
      self.outputs[vid].append(y[i:i + k])
      i += k
      self.remaining[vid] -= k
    self._emit()

  def _emit(self) -> None:
    while (self.order and self.order[0] in self.closed
           and self.remaining[self.order[0]] == 0):
      vid = self.order.pop(0)
      out = np.concatenate(self.outputs.pop(vid))
      del self.remaining[vid]
      self.closed.discard(vid)
      self.on_done(vid, out)


# ----------------------------------------------------------------------------
# The loop.


def read_manifest(path) -> dict[str, Any]:
  path = pathlib.Path(path)
  if not path.is_file():
    return {}
  try:
    return jsonio.read_json(path)
  except ValueError:
    logging.warning("%s is not valid JSON; starting a new manifest", path)
    return {}


def feed(prep: common.Prepared, batchers: dict[str, RowBatcher],
         records: dict[str, Any], fail, failures) -> None:
  """One chunk into the batchers (its failures to `fail`)."""
  vid = prep.vid
  if prep.info:
    if prep.lo == 0:
      records[vid] = dict(prep.info, path=os.path.basename(prep.path))
    else:
      records.setdefault(vid, {}).update(prep.info)
  for f, reason in prep.errors.items():
    if f not in failures.get(vid, {}):
      fail(vid, f, reason)
  for f, rows in prep.inputs.items():
    if f not in failures.get(vid, {}):
      batchers[f].add(vid, rows, last=prep.last)
  if prep.last:
    for b in batchers.values():
      b.close(vid)


def extract(exporter: common.Exporter, path: str, vid: str | None = None,
            chunk_segments: int = 0, features: tuple[str, ...] | None = None
            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """({feature: finalized [rows, D] array}, video record) of one video, in
  memory (no files): what `export` would write for it.

  Decodes chunk by chunk (bounded memory); raises decode.DecodeError (or
  the encoder's error) naming the failed features and why.
  """
  vid = vid or pathlib.Path(path).stem
  todo = tuple(features or exporter.features)
  out: dict[str, np.ndarray] = {}
  failures: dict[str, dict[str, str]] = {}
  records: dict[str, Any] = {}

  def fail(v, f, reason):
    failures.setdefault(v, {})[f] = reason

  def make_sink(f):
    def on_done(v, rows):
      if f in failures.get(v, {}):
        return
      try:
        rows = exporter.finalize(f, v, rows)
        common.check_finite(v, f, rows)
        out[f] = rows
      except Exception as e:  # pylint: disable=broad-except
        fail(v, f, common.reason_of(e))
    return on_done

  batchers = {f: RowBatcher(exporter.encoder(f), exporter.batch_size(f),
                            make_sink(f), pad=exporter.pad_batches)
              for f in todo}
  for prep in safe_prepare(exporter, vid, path, todo, chunk_segments):
    feed(prep, batchers, records, fail, failures)
  for b in batchers.values():
    b.flush()
  if failures.get(vid):
    raise decode_lib.DecodeError("; ".join(
        f"{f}: {r}" for f, r in failures[vid].items()))
  return out, records.get(vid, {})


def export(config, exporter) -> dict[str, Any]:
  """Exports every video in config.videos_dir that lacks an output file."""
  root = pathlib.Path(config.output_root)
  root.mkdir(parents=True, exist_ok=True)
  if config.get("workdir"):
    jsonio.write_json_atomic(pathlib.Path(config.workdir) / "config.json",
                      json.loads(config.to_json_best_effort()))
  manifest_path = root / MANIFEST.format(exporter.name)
  previous = read_manifest(manifest_path)
  feats = tuple(exporter.features)
  videos = list_videos(config)
  todo, skipped = [], []
  for vid, path in videos:
    missing = tuple(
        f for f in feats
        if not features_lib.feature_path(root, f, vid).is_file()
    )
    (todo.append((vid, path, missing)) if missing else skipped.append(vid))
  logging.info(
      "%s: %d videos in %s, %d already exported (skipped), %d to do",
      exporter.name, len(videos), config.videos_dir, len(skipped), len(todo))

  extra = exporter.write_extra(root, previous)  # e.g. class text embeddings
  failures: dict[str, dict[str, str]] = {}
  records: dict[str, Any] = dict(previous.get("videos", {}))
  written: dict[str, set[str]] = collections.defaultdict(set)

  def fail(vid, feature, reason):
    failures.setdefault(vid, {})[feature] = reason

  def make_sink(feature):
    def on_done(vid, out):
      if feature in failures.get(vid, {}):
        return  # failed in a later chunk: its rows are dropped
      try:
        out = exporter.finalize(feature, vid, out)
        common.check_finite(vid, feature, out)
        jsonio.save_npy_atomic(
            features_lib.feature_path(root, feature, vid), out)
        written[vid].add(feature)
      except Exception as e:  # pylint: disable=broad-except
        fail(vid, feature, common.reason_of(e))
    return on_done

  batchers = {
      f: RowBatcher(exporter.encoder(f), exporter.batch_size(f), make_sink(f),
                    pad=exporter.pad_batches)
      for f in feats
  }
  chunk = int(config.get("chunk_segments", 0) or 0)
  stream = prefetch_chunks(
      todo, lambda it: safe_prepare(exporter, *it, chunk), config.num_workers)
  import tqdm  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()

  def manifest(complete: bool) -> dict[str, Any]:
    done = [v for v, _, m in todo
            if written[v] >= set(m) and v not in failures]
    failed = [v for v, _, _ in todo if v in failures]
    specs = features_lib.SEGMENT_FEATURES
    return dict(
        version=MANIFEST_VERSION,
        exporter=exporter.name,
        complete=complete,  # False: interrupted; re-run to resume
        written_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        random_init_for_testing=bool(config.random_init_for_testing),
        videos_dir=os.fspath(config.videos_dir),
        features={f: dict(path=specs[f].subdir, dim=specs[f].dim,
                          rows_per_segment=specs[f].frames_per_segment)
                  for f in feats},
        models=exporter.model_info(),
        settings=exporter.settings(),
        counts=dict(total=len(videos), done=len(done), skipped=len(skipped),
                    failed=len(failed)),
        failures=[dict(id=v, features=failures[v]) for v in failed],
        timing=dict(
            wall_seconds=round(time.perf_counter() - start, 3),
            **{f"{f}_rows": b.rows_done for f, b in batchers.items()},
            **{f"{f}_model_seconds": round(b.seconds, 3)
               for f, b in batchers.items()},
        ),
        videos=records,
        **extra,
    )

  bar = tqdm.tqdm(total=len(todo), desc=f"export {exporter.name}",
                  disable=not config.get("progress", True), unit="video")
  try:
    for prep in stream:
      feed(prep, batchers, records, fail, failures)
      bar.update(int(prep.last))
    for b in batchers.values():
      b.flush()
    bar.close()
  except BaseException:
    jsonio.write_json_atomic(manifest_path, manifest(complete=False))
    raise
  result = manifest(complete=True)
  jsonio.write_json_atomic(manifest_path, result)
  counts = result["counts"]
  failed = [f["id"] for f in result["failures"]]
  summary = (f"{exporter.name}: {counts['done']} exported, {counts['skipped']}"
             f" skipped (already there), {counts['failed']} failed; manifest"
             f" {manifest_path}")
  if failed:
    logging.warning("%s. Failures:\n%s", summary, "\n".join(
        f"  {v}: {failures[v]}" for v in failed[:20]))
  else:
    logging.info("%s", summary)
  print(summary, flush=True)
  return result


def export_for(features, configs, videos_dir: str, output_root: str,
               workdir: str | None = None, videos_flag: str | None = None,
               config_flag: str | None = None) -> dict[str, Any]:
  """Exports `features` of every video in videos_dir into output_root with
  the exporters that write them (configs: {exporter name: its config}).

  Returns {"videos": [(id, path)], "failures": {id: reason},
  "records": {id: video record (duration, num_segments, ...)}}; a video
  fails if any of its features does ("<reason> (<features>)", joined by
  "; "), the rest go on.
  """
  videos, failures, records = None, {}, {}
  for name, feats in registry.exporters_for(features).items():
    c = configs[name].copy_and_resolve_references()
    with c.unlocked():
      c.videos_dir, c.output_root, c.features = videos_dir, output_root, feats
      c.workdir = (os.path.join(workdir, f"export_{name}") if workdir
                   else None)
    # Errors name the caller's flags (the parse stage: --config.videos,
    # --config.export_<name>.<field>).
    flag = lambda field, name=name: (
        videos_flag if field == "videos_dir" and videos_flag else
        f"{config_flag.format(name=name)}.{field}" if config_flag else
        f"--config.{field}")
    try:
      exporter = registry.get_exporter(c)
    except (ValueError, FileNotFoundError) as e:
      text = str(e)
      if config_flag:  # the exporter names its own config's flags
        text = text.replace("--config.", flag("").rstrip(".") + ".")
      raise type(e)(f"exporter {name!r} (config.export_{name}): {text}"
                    ) from e
    videos = videos or list_videos(c, flag)
    manifest = export(c, exporter)
    for f in manifest["failures"]:
      by_reason = collections.defaultdict(list)  # one line per reason
      for feature, r in f["features"].items():
        by_reason[r].append(feature)
      reason = "; ".join(f"{r} ({', '.join(fs)})"
                         for r, fs in by_reason.items())
      failures[f["id"]] = "; ".join(
          x for x in (failures.get(f["id"]), reason) if x)
    for vid, rec in manifest["videos"].items():
      records.setdefault(vid, {}).update(rec)
  return dict(videos=videos or [], failures=failures, records=records)

