"""Stage-2 pseudo-label files: the UWAV `LLP_Dataset/` layout (numpy only).

The one place the format is defined (ARCHITECTURE.md "Pseudo-labels"):
`{a,v}_classwise_threhsolds.npy` [C], `{a,v}_segmentwise_logits/<id>.npy`
and `{a,v}_segmentwise_pseudo_labels/<id>.npy` [T, C], and `manifest.json`
(written last: a directory with a manifest is complete). UWAV's released
labels (no manifest) drop in. The math that makes them is in
ear_jax/pseudo_labels.py.
"""
# pylint: disable=invalid-name

from __future__ import annotations

import datetime
import os
import shutil
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

from ear_jax import jsonio
from ear_jax.data import parallel as parallel_lib

# UWAV's file names, typo included, so its released labels drop in.
LLP_DIR = "LLP_Dataset"
THRESHOLD_FILE = "{m}_classwise_threhsolds.npy"
LOGIT_DIR = "{m}_segmentwise_logits"
LABEL_DIR = "{m}_segmentwise_pseudo_labels"
MANIFEST = "manifest.json"
# The manifest while the files it describes are being published.
PENDING_MANIFEST = ".manifest.pending.json"
FORMAT = "uwav_llp_dataset"
VERSION = 1


# A stage-2 run of an N-seed stage 1 (N > 1): set k, a complete stage-2
# output of its own, in <workdir>/seeds/<k>/; the manifest naming the sets
# is written last.
SEEDS_DIR = "seeds"
SEEDS_MANIFEST = "seeds_manifest.json"


def seed_set_dir(workdir, k: int) -> str:
  """<workdir>/seeds/<k>: pseudo-label set k of an N-seed stage 2."""
  return os.path.join(os.fspath(workdir), SEEDS_DIR, str(int(k)))


def read_seeds_manifest(workdir) -> dict | None:
  """<workdir>/seeds_manifest.json ({"num_seeds", "seeds", "sets", ...});
  None for a one-set run (or one not finished)."""
  path = os.path.join(os.fspath(workdir), SEEDS_MANIFEST)
  return jsonio.read_json(path) if os.path.isfile(path) else None


def write_seeds_manifest(workdir, manifest: Mapping[str, Any]) -> str:
  """Writes the N-set manifest (last: it completes the run) atomically."""
  path = os.path.join(os.fspath(workdir), SEEDS_MANIFEST)
  jsonio.write_json_atomic(path, dict(manifest))
  return path


def pseudo_label_sets(pseudo_dir) -> list[str]:
  """The directories of the pseudo-label sets at `pseudo_dir`, each one
  for read_stage2: N set folders for a stage 2 of an N-seed stage 1 (in
  seed order), else [pseudo_dir] itself."""
  pseudo_dir = os.fspath(pseudo_dir)
  manifest = read_seeds_manifest(pseudo_dir)
  if manifest is not None:
    sets = manifest.get("sets")
    if not isinstance(sets, list) or not sets:
      raise ValueError(f"{os.path.join(pseudo_dir, SEEDS_MANIFEST)} lists no"
                       " pseudo-label sets; re-run stage 2 in that workdir.")
    return [os.path.join(pseudo_dir, rel) for rel in sets]
  if os.path.isdir(os.path.join(pseudo_dir, SEEDS_DIR)) and not os.path.isfile(
      os.path.join(llp_dir(pseudo_dir), MANIFEST)):
    raise ValueError(
        f"{pseudo_dir} is unfinished: it holds {SEEDS_DIR}/ (per-seed"
        f" pseudo-labels) but no {SEEDS_MANIFEST}, so stage 2 was stopped"
        " before it wrote every set. Re-run stage 2 in that workdir.")
  return [pseudo_dir]


def llp_dir(workdir) -> str:
  """<workdir>/LLP_Dataset, where a stage-2 run keeps its files."""
  return os.path.join(os.fspath(workdir), LLP_DIR)


def read_manifest(workdir) -> dict | None:
  """The manifest of <workdir>/LLP_Dataset; None if it is not complete."""
  path = os.path.join(llp_dir(workdir), MANIFEST)
  if not os.path.isfile(path):
    return None
  return jsonio.read_json(path)


def _thresholds_to_json(theta_C: np.ndarray) -> list:
  # JSON has no infinities; -inf (a legal threshold) is written as a string.
  return [("-inf" if x < 0 else "inf") if np.isinf(x) else float(x)
          for x in np.asarray(theta_C, np.float32)]


def _thresholds_from_json(values: Sequence[Any]) -> np.ndarray:
  return np.asarray([float(x) for x in values], np.float32)


def _check_thresholds(name: str, theta, C: int) -> np.ndarray:
  theta = np.asarray(theta, np.float32)
  if theta.shape != (C,):
    raise ValueError(f"{name} has shape {theta.shape}; expected ({C},).")
  if np.isnan(theta).any() or (theta == np.inf).any():
    raise ValueError(f"{name} contains NaN or +inf ({theta.tolist()}); only"
                     " finite values and -inf are valid thresholds.")
  return theta


def write_stage2(out_dir, split_ids: Mapping[str, Sequence[str]],
                 a_logits: Mapping[str, np.ndarray],
                 v_logits: Mapping[str, np.ndarray],
                 a_labels: Mapping[str, np.ndarray],
                 v_labels: Mapping[str, np.ndarray], thresholds_a,
                 thresholds_v, manifest: Mapping[str, Any],
                 num_workers: int = 16, with_manifest: bool = True) -> str:
  """Writes stage-2 outputs in the UWAV layout under <out_dir>/LLP_Dataset.

  Args:
    out_dir: run directory (the workdir).
    split_ids: {split: [11-character ids]}.
    a_logits, v_logits: {split: float32 [N, T, C]} raw generator logits.
    a_labels, v_labels: {split: 0/1 [N, T, C]} binary pseudo-labels
      (pseudo_labels.binarize of the logits), stored as float32.
    thresholds_a, thresholds_v: float32 [C], may hold -inf.
    manifest: metadata to record; must hold "classes" (C names). The
      format, version, shapes, ids and thresholds are added here.
    with_manifest: False leaves it as PENDING_MANIFEST, for publish_stage2
      to rename into place once the files that describe it are written.
  Returns:
    The LLP_Dataset directory. Its manifest.json is written last, so a
    directory with a manifest is complete.
  """
  if "classes" not in manifest:
    raise ValueError("manifest must hold 'classes' (the C class names in"
                     " index order, e.g. avvp.LLP_CLASSES).")
  classes = [str(c) for c in manifest["classes"]]
  C = len(classes)
  theta = {"a": _check_thresholds("thresholds_a", thresholds_a, C),
           "v": _check_thresholds("thresholds_v", thresholds_v, C)}
  splits = list(split_ids)
  for name, d in (("a_logits", a_logits), ("v_logits", v_logits),
                  ("a_labels", a_labels), ("v_labels", v_labels)):
    if set(d) != set(splits):
      raise ValueError(f"{name} has splits {sorted(d)}; expected the splits"
                       f" of split_ids {sorted(splits)}.")
  T = None
  seen = {}
  for split in splits:
    ids = list(split_ids[split])
    for vid in ids:
      if vid in seen:
        raise ValueError(f"id {vid!r} appears in split {seen[vid]!r} and in"
                         f" {split!r}; one file per id cannot hold both.")
      seen[vid] = split
    for name, x in (("a_logits", a_logits[split]),
                    ("v_logits", v_logits[split])):
      x = np.asarray(x)
      if T is None and x.ndim == 3:
        T = x.shape[1]
      if x.ndim != 3 or x.shape != (len(ids), T, C):
        raise ValueError(f"{name}[{split!r}] has shape {x.shape}; expected"
                         f" {(len(ids), T, C)} ([N ids, T, C classes]).")
      if not np.isfinite(x).all():
        raise ValueError(f"{name}[{split!r}] holds non-finite logits.")
    for name, x in (("a_labels", a_labels[split]),
                    ("v_labels", v_labels[split])):
      x = np.asarray(x)
      if x.shape != (len(ids), T, C):
        raise ValueError(f"{name}[{split!r}] has shape {x.shape}; expected"
                         f" {(len(ids), T, C)} ([N ids, T, C classes]).")
      if ((x != 0) & (x != 1)).any():
        raise ValueError(f"{name}[{split!r}] holds values other than 0/1.")
  if T is None:
    raise ValueError("split_ids is empty; nothing to write.")

  root = os.path.join(os.fspath(out_dir), LLP_DIR)
  os.makedirs(root, exist_ok=True)
  manifest_path = os.path.join(root, MANIFEST)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # the directory is incomplete until rewritten
  for m in ("a", "v"):
    os.makedirs(os.path.join(root, LOGIT_DIR.format(m=m)), exist_ok=True)
    os.makedirs(os.path.join(root, LABEL_DIR.format(m=m)), exist_ok=True)
    jsonio.save_npy_atomic(os.path.join(root, THRESHOLD_FILE.format(m=m)),
                           theta[m])

  jobs = []
  for split in splits:
    logits = {"a": np.asarray(a_logits[split], np.float32),
              "v": np.asarray(v_logits[split], np.float32)}
    binary = {"a": np.asarray(a_labels[split], np.float32),
              "v": np.asarray(v_labels[split], np.float32)}
    for m in ("a", "v"):
      labels = binary[m]
      for i, vid in enumerate(split_ids[split]):
        jobs.append((os.path.join(root, LOGIT_DIR.format(m=m), vid + ".npy"),
                     logits[m][i]))
        jobs.append((os.path.join(root, LABEL_DIR.format(m=m), vid + ".npy"),
                     labels[i]))
  parallel_lib.parallel_map(lambda job: jsonio.save_npy_atomic(*job), jobs,
                            num_workers)

  out = dict(manifest)
  out.update(
      format=FORMAT, version=VERSION, classes=classes, num_segments=int(T),
      num_classes=C, ids={s: list(split_ids[s]) for s in splits},
      thresholds_a=_thresholds_to_json(theta["a"]),
      thresholds_v=_thresholds_to_json(theta["v"]),
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"))
  jsonio.write_json_atomic(
      manifest_path if with_manifest else os.path.join(root, PENDING_MANIFEST),
      out)
  return root


def publish_stage2(workdir, extra_json: Mapping[str, Any] | None = None,
                   **kw) -> str:
  """Publishes stage-2 outputs so that a kill at any point leaves a workdir
  that is either complete or visibly unfinished (no manifest):

  1. temporary folders of killed runs are removed;
  2. write_stage2 fills a fresh directory beside <workdir>/LLP_Dataset,
     which is then swapped in (readers see the old or the new one), its
     manifest still pending;
  3. `extra_json` ({path relative to workdir: object}, e.g. eval/*.json,
     which describe these labels) is written, each file atomically;
  4. the manifest is renamed into place: the directory is complete.

  The caller owns the workdir (launch.py's lock).
  """
  remove_stale_temporaries(workdir)
  root = jsonio.write_dir_atomic(
      llp_dir(workdir), lambda tmp: write_stage2(tmp, with_manifest=False,
                                                 **kw))
  for rel, obj in (extra_json or {}).items():
    jsonio.write_json_atomic(os.path.join(os.fspath(workdir), rel), obj)
  os.replace(os.path.join(root, PENDING_MANIFEST),
             os.path.join(root, MANIFEST))
  return root


def remove_stale_temporaries(workdir) -> list[str]:
  """Removes what killed publishes left in `workdir`: their temporary
  folders (.LLP_Dataset.*, and .stage2-* of older versions) and an
  LLP_Dataset.old that was never deleted. Returns the removed paths."""
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    return []
  gone = []
  for name in sorted(os.listdir(workdir)):
    if (name.startswith((f".{LLP_DIR}.", ".stage2-"))
        or name == f"{LLP_DIR}.old"):
      path = os.path.join(workdir, name)
      shutil.rmtree(path, ignore_errors=True)
      gone.append(path)
  if gone:
    logging.warning("removed what an interrupted stage 2 left: %s",
                    ", ".join(gone))
  return gone


def _load_npy(path: str) -> np.ndarray:
  return jsonio.load_npy(path, fix="Re-run stage 2 to rewrite it.")


def _resolve_root(pseudo_dir) -> str:
  pseudo_dir = os.fspath(pseudo_dir)
  for root in (os.path.join(pseudo_dir, LLP_DIR), pseudo_dir):
    if os.path.isfile(os.path.join(root, THRESHOLD_FILE.format(m="a"))):
      return root
  sets = read_seeds_manifest(pseudo_dir)
  if sets is not None:
    raise FileNotFoundError(
        f"{pseudo_dir} holds {len(sets.get('sets', []))} pseudo-label sets,"
        f" one per seed of its stage-1 run ({SEEDS_DIR}/<k>/); point at one"
        f" of them, e.g. {seed_set_dir(pseudo_dir, 0)} (stage 3 with"
        " --config.num_seeds set to their count reads them all).")
  raise FileNotFoundError(
      f"no stage-2 pseudo-labels at {pseudo_dir}: expected"
      f" {os.path.join(pseudo_dir, LLP_DIR, THRESHOLD_FILE.format(m='a'))}"
      " (or that file directly inside the given directory). Run stage 2"
      " (configs/stage2.py) or point pseudo_labels_dir at its workdir.")


def read_stage2(pseudo_dir, ids: Sequence[str],
                expect_classes: Sequence[str] | None = None,
                expect_num_segments: int = 10, num_workers: int = 16) -> dict:
  """Reads and checks stage-2 outputs for `ids`.

  Args:
    pseudo_dir: the stage-2 workdir or its LLP_Dataset directory. UWAV's
      released labels (no manifest.json) are accepted with a warning.
    ids: the 11-character ids to load, in the order wanted.
    expect_classes: class names the manifest must list (their count is
      checked against the files in any case).
    expect_num_segments: T.
  Returns:
    dict(a_logit, v_logit: float32 [N, T, C], a_label, v_label: uint8
    [N, T, C], thresholds_a, thresholds_v: float32 [C], manifest: dict or
    None).
  """
  root = _resolve_root(pseudo_dir)
  T = int(expect_num_segments)
  manifest_path = os.path.join(root, MANIFEST)
  manifest = None
  if os.path.isfile(os.path.join(root, PENDING_MANIFEST)):
    raise ValueError(
        f"{root} is unfinished: stage 2 was stopped while publishing it (no"
        f" {MANIFEST} yet). Re-run stage 2 in that workdir.")
  if os.path.isfile(manifest_path):
    manifest = jsonio.read_json(manifest_path)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
      raise ValueError(
          f"{manifest_path}: format {manifest.get('format')!r} version"
          f" {manifest.get('version')!r}; expected {FORMAT!r} version"
          f" {VERSION}. Re-run stage 2 with this version of ear_jax.")
    classes = manifest.get("classes")
    if expect_classes is not None and classes != list(expect_classes):
      raise ValueError(
          f"{manifest_path}: classes {classes} differ from the"
          f" expected {list(expect_classes)}. The labels were made for"
          " another dataset or class order; re-run stage 2 for this one.")
    if manifest.get("num_segments") != T:
      raise ValueError(
          f"{manifest_path}: num_segments {manifest.get('num_segments')};"
          f" expected"
          f" {T}. Re-run stage 2 with the LLP data of this run.")
  else:
    logging.warning(
        "%s has no %s; reading it as UWAV-released pseudo-labels without"
        " provenance checks.", root, MANIFEST)

  theta = {}
  for m in ("a", "v"):
    path = os.path.join(root, THRESHOLD_FILE.format(m=m))
    x = _load_npy(path)
    if x.ndim != 1:
      raise ValueError(f"{path}: shape {x.shape}; expected (C,).")
    theta[m] = _check_thresholds(path, x, x.shape[0])
  C = theta["a"].shape[0]
  if theta["v"].shape != (C,):
    raise ValueError(f"{root}: audio thresholds have {C} classes, visual"
                     f" {theta['v'].shape[0]}; the directory is inconsistent.")
  if expect_classes is not None and C != len(expect_classes):
    raise ValueError(f"{root}: thresholds have {C} classes; expected"
                     f" {len(expect_classes)}. Re-run stage 2 for this"
                     " class list.")
  if manifest is not None:
    for m in ("a", "v"):
      listed = _thresholds_from_json(manifest[f"thresholds_{m}"])
      if not np.array_equal(listed, theta[m]):
        raise ValueError(
            f"{root}: {THRESHOLD_FILE.format(m=m)} differs from the"
            f" thresholds in {MANIFEST}; the directory was partly rewritten."
            " Re-run stage 2 into a clean directory.")

  folders = [(key, os.path.join(root, fmt.format(m=m)))
             for m in ("a", "v")
             for key, fmt in ((f"{m}_logit", LOGIT_DIR),
                              (f"{m}_label", LABEL_DIR))]
  for _, folder in folders:
    jsonio.require_npy_files(
        folder, ids, "Re-run stage 2 with the same LLP data (annotations) as"
        " this run.")

  def load(job):
    key, path = job
    x = _load_npy(path)
    if x.shape != (T, C):
      raise ValueError(f"{path}: shape {x.shape}; expected {(T, C)} (T"
                       " segments, C classes). Re-run stage 2 for this data.")
    if key.endswith("logit"):
      if not np.isfinite(x).all():
        raise ValueError(f"{path}: non-finite logits; re-run stage 2 (the"
                         " generator checkpoint may be broken).")
      return x.astype(np.float32)
    if ((x != 0) & (x != 1)).any():
      raise ValueError(f"{path}: pseudo-labels must be 0/1; re-run stage 2.")
    return x.astype(np.uint8)

  jobs = [(key, os.path.join(folder, vid + ".npy"))
          for key, folder in folders for vid in ids]
  rows = parallel_lib.parallel_map(load, jobs, num_workers)
  out = {}
  for k, (key, _) in enumerate(folders):
    dtype = np.float32 if key.endswith("logit") else np.uint8
    out[key] = (np.stack(rows[k * len(ids):(k + 1) * len(ids)]) if ids
                else np.zeros((0, T, C), dtype))
  out.update(thresholds_a=theta["a"], thresholds_v=theta["v"],
             manifest=manifest)
  return out
