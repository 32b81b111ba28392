"""Writes a small synthetic LLP + UnAV-100 dataset in the published layouts.

Planted events drive every feature, so labels, migration and zero-shot scores
have something real to find (for tests and :tiny runs).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import time

from absl import logging
import numpy as np

from ear_jax import jsonio
from ear_jax.data import avvp as avvp_lib
from ear_jax.data import features as features_lib
from ear_jax.data import parallel as parallel_lib

# pylint: disable=invalid-name

# LLP classes that share their latent event with a UnAV class, so a generator
# trained on synthetic UnAV transfers to synthetic LLP. The other four LLP
# classes get latents of their own (ids 100..103), unseen in UnAV.
LLP_TO_UNAV = {
    "Speech": "man speaking",
    "Car": "car passing by",
    "Cheering": "people cheering",
    "Dog": "dog barking",
    "Cat": "cat meowing",
    "Basketball_bounce": "basketball bounce",
    "Chainsaw": "chainsawing trees",
    "Cello": "playing cello",
    "Banjo": "playing banjo",
    "Singing": "male singing",
    "Violin_fiddle": "playing violin",
    "Vacuum_cleaner": "vacuum cleaner cleaning floors",
    "Baby_laughter": "baby laughter",
    "Accordion": "playing accordion",
    "Lawn_mower": "lawn mowing",
    "Motorcycle": "driving motorcycle",
    "Helicopter": "helicopter",
    "Acoustic_guitar": "playing acoustic guitar",
    "Telephone_bell_ringing": "telephone bell ringing",
    "Baby_cry_infant_cry": "baby crying",
    "Clapping": "people clapping",
}

# Classes in a group share part of their latent (cosine ~_GROUP_RHO), which
# makes zero-shot scoring confusable, as with real text encoders.
_GROUPS = (
    ("man speaking", "woman speaking", "kid speaking", "people whispering"),
    ("male singing", "female singing", "child singing", "singing choir"),
    ("baby laughter", "baby babbling", "baby crying", "people sobbing"),
    ("dog barking", "dog howling"),
    ("people cheering", "people crowd", "people shouting", "people clapping",
     "people battle cry"),
    ("playing acoustic guitar", "playing violin", "playing cello",
     "playing banjo", "playing ukulele", "playing base guitar", "playing erhu",
     "playing harp", "playing zither"),
    ("fire truck siren", "police car siren", "ambulance siren", "Fire_alarm"),
    ("car passing by", "driving buses", "driving motorcycle", "auto racing",
     "engine knocking", "vehicle honking", "skidding"),
    ("playing trumpet", "playing cornet", "playing trombone",
     "playing saxophone", "playing clarinet", "playing flute"),
    ("chainsawing trees", "lawn mowing", "vacuum cleaner cleaning floors",
     "hair dryer drying", "helicopter", "Blender"),
)  # pyformat: disable
_GROUP_RHO = 0.3
_D_LATENT = 128
_COMMON = 0.4  # shared offset of every segment feature (a "modality gap")
_SIGMA = {"clap": 0.08, "vggish": 0.08, "clip": 0.12, "r2plus1d_18": 0.12,
          "res152": 0.3}
_AUDIO_SPACES = ("clap", "vggish")
_TEXT_NOISE = 5.0  # latent noise of the class-name embeddings (AUC ~0.9)
# Share of that noise that is phrasing, fresh per dataset; the rest belongs to
# the class (as the CLIP text embeddings of "Dog" and "dog barking" are close),
# so a generator trained on UnAV text learns something that transfers to LLP.
_TEXT_PHRASING = 0.2
_TEXT_GAP = 1.0  # shared offset of all text embeddings
# Per-segment evidence of an event fluctuates (motion, occlusion, quiet
# moments): amplitude * clip(1 + _JITTER * N(0, 1)), and a _FAINT share of
# its segments carry only 10-30% of it. Annotations still mark them, so
# temporal context is needed to get them right.
_JITTER = 0.3
_FAINT = 0.1
# Classes that tend to share an LLP video (music, crowds, babies, animals,
# engines, kitchens, alarms): each further class of a video comes from a
# scene of its first class with probability _SCENE_P, which gives a class
# graph (ERM) real co-occurrence to learn.
_LLP_SCENES = (
    ("Singing", "Acoustic_guitar", "Banjo", "Violin_fiddle", "Cello",
     "Accordion"),
    ("Speech", "Cheering", "Clapping", "Basketball_bounce"),
    ("Speech", "Baby_laughter", "Baby_cry_infant_cry"),
    ("Speech", "Dog", "Cat", "Chicken_rooster"),
    ("Car", "Motorcycle", "Helicopter", "Speech"),
    ("Lawn_mower", "Chainsaw", "Dog"),
    ("Frying_(food)", "Blender", "Vacuum_cleaner", "Speech"),
    ("Telephone_bell_ringing", "Fire_alarm", "Speech"),
)
_SCENE_P = 0.7
_YOUTUBE_ALPHABET = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)
_CHUNK = 64  # videos rendered at a time (bounds the res152 memory)
_NUM_WRITERS = 8  # threads writing one chunk's files


def _rng(seed: int, *stream: int) -> np.random.Generator:
  return np.random.default_rng([seed, *stream])


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]


def _orthonormal_rows(rng, rows: int, cols: int) -> np.ndarray:
  """A random [rows, cols] matrix with orthonormal rows, without LAPACK.

  Random rows of the orthonormal DCT-II basis, with columns permuted and
  sign-flipped (both keep the rows orthonormal).
  """
  k = rng.choice(cols, rows, replace=False)[:, None]
  n = np.arange(cols)[None, :]
  basis = np.cos(np.pi / cols * (n + 0.5) * k) * np.sqrt(2.0 / cols)
  basis[k[:, 0] == 0] /= np.sqrt(2.0)
  signs = rng.choice([-1.0, 1.0], cols)
  return basis[:, rng.permutation(cols)] * signs


class _World:
  """Latent audio/visual prototypes per class and one projection per space."""

  def __init__(self, seed: int):
    rng = _rng(seed, 0)
    llp_only = [c for c in avvp_lib.LLP_CLASSES if c not in LLP_TO_UNAV]
    names = list(avvp_lib.UNAV_CLASSES) + llp_only
    latent_of = {n: k for k, n in enumerate(names)}
    self.num_latents = len(names)
    self.llp_latent = np.array(
        [latent_of[LLP_TO_UNAV.get(c, c)] for c in avvp_lib.LLP_CLASSES])
    self.shared_unav = np.array(sorted(latent_of[u]
                                       for u in LLP_TO_UNAV.values()))
    self.proto = {}  # "a" | "v" -> [K, d] unit latents
    for m in ("a", "v"):
      lat = _unit(rng.standard_normal((len(names), _D_LATENT)))
      for group in _GROUPS:
        g = _unit(rng.standard_normal(_D_LATENT))
        idx = [latent_of[n] for n in group]
        lat[idx] = _unit(math.sqrt(_GROUP_RHO) * g
                         + math.sqrt(1 - _GROUP_RHO) * lat[idx])
      self.proto[m] = lat
    rng_text = _rng(seed, 7)
    self.text_offset = {m: _unit(rng_text.standard_normal(
        (len(names), _D_LATENT))) for m in ("a", "v")}
    self._seed = seed
    self._spaces = {}

  def space(self, name: str):
    """(projection [L, D], common offset [D], text offset [D]) of a space."""
    if name not in self._spaces:
      rng = _rng(self._seed, 6, sorted(features_lib.SEGMENT_FEATURES).index(
          name))
      dim = features_lib.SEGMENT_FEATURES[name].dim
      self._spaces[name] = (
          _orthonormal_rows(rng, _D_LATENT, dim).astype(np.float32),
          (_unit(rng.standard_normal(dim)) * _COMMON).astype(np.float32),
          (_unit(rng.standard_normal(dim)) * _TEXT_GAP).astype(np.float32),
      )
    return self._spaces[name]

  def modality(self, space: str) -> str:
    return "a" if space in _AUDIO_SPACES else "v"

  def text(self, rng, space: str, latents: np.ndarray) -> np.ndarray:
    """Class-name embeddings: normalise(prototype + noise + shared gap).

    The noise mixes the latent's own text offset with fresh phrasing noise.
    """
    proj, _, gap = self.space(space)
    m = self.modality(space)
    lat = self.proto[m][latents]
    noise = _unit(
        math.sqrt(1 - _TEXT_PHRASING) * self.text_offset[m][latents]
        + math.sqrt(_TEXT_PHRASING) * _unit(rng.standard_normal(lat.shape))
    ) * _TEXT_NOISE
    emb = (lat + noise).astype(np.float32) @ proj + gap
    return _unit(emb)

  def render(self, rng, space, z_NxL, frames=1):
    """Segment features: normalise(projected latent + common + noise).

    With frames > 1 (res152) returns [N * frames, D]; the frames of a segment
    take shifted windows of one noise row: uncorrelated and cheap to draw.
    """
    proj, common, _ = self.space(space)
    base_NxD = z_NxL.astype(np.float32) @ proj + common
    n, dim = base_NxD.shape
    noise = rng.standard_normal((n, dim + frames - 1), dtype=np.float32)
    noise_NxFxD = np.lib.stride_tricks.sliding_window_view(noise, dim, axis=1)
    feats_NxFxD = noise_NxFxD * np.float32(_SIGMA[space] / math.sqrt(dim))
    feats_NxFxD += base_NxD[:, None, :]
    feats_NxFxD /= np.sqrt(
        np.einsum("nfd,nfd->nf", feats_NxFxD, feats_NxFxD))[..., None]
    return feats_NxFxD.reshape(n * frames, dim)


class _Video:
  """Planted events of one video as per-segment amplitudes per latent."""

  def __init__(self, rng, num_latents: int, T: int):
    self.amp = {"a": np.zeros((T, num_latents), np.float32),
                "v": np.zeros((T, num_latents), np.float32)}
    self.bg = {m: (rng.uniform(0.05, 0.4) * _unit(
        rng.standard_normal(_D_LATENT))).astype(np.float32)
               for m in ("a", "v")}
    self.events = []  # (modality "a"|"v"|"av", latent, s, e), for the record

  def add(self, modality, k, s, e, amp_T):
    for m in ("a", "v"):
      if m in modality:
        np.maximum(self.amp[m][s:e, k], amp_T, out=self.amp[m][s:e, k])
    self.events.append((modality, int(k), int(s), int(e)))


def _random_ids(rng, n: int) -> list[str]:
  ids, seen = [], set()
  alphabet = np.array(list(_YOUTUBE_ALPHABET))
  while len(ids) < n:
    for row in rng.integers(0, len(alphabet), (n, avvp_lib.LLP_ID_LEN)):
      vid = "".join(alphabet[row])
      if vid not in seen and len(ids) < n:
        seen.add(vid)
        ids.append(vid)
  return ids


def _evidence(rng, amp, n: int) -> np.ndarray:
  """Per-segment amplitudes of an n-segment run (see _JITTER, _FAINT)."""
  amp_n = amp * np.clip(1.0 + _JITTER * rng.standard_normal(n), 0.2, 1.6)
  faint = rng.random(n) < _FAINT
  amp_n[faint] *= rng.uniform(0.1, 0.3, int(faint.sum()))
  return amp_n.astype(np.float32)


def _run(rng, T, min_len, max_len):
  length = int(rng.integers(min_len, min(max_len, T) + 1))
  s = int(rng.integers(0, T - length + 1))
  return s, s + length


# ----------------------------------------------------------------------------
# LLP


def _llp_video(rng, world, T=avvp_lib.LLP_NUM_SEGMENTS):
  """Plants 1-3 classes; returns the video and its (modality, c, s, e) rows."""
  video = _Video(rng, world.num_latents, T)
  num = int(rng.choice([1, 2, 3], p=[0.4, 0.5, 0.1]))
  p = np.full(len(avvp_lib.LLP_CLASSES), 0.7 / 24)
  p[0] = 0.3  # Speech is the most common LLP class
  classes = [int(rng.choice(len(p), p=p))]
  name = avvp_lib.LLP_CLASSES[classes[0]]
  scenes = [sc for sc in _LLP_SCENES if name in sc]
  while len(classes) < num:
    free = [avvp_lib.LLP_CLASSES.index(n) for n in
            (scenes[int(rng.integers(len(scenes)))] if scenes else ())]
    free = [c for c in free if c not in classes]
    if not free or rng.random() >= _SCENE_P:
      free = [c for c in range(len(p)) if c not in classes]
    q = p[free] / p[free].sum()
    classes.append(int(free[int(rng.choice(len(free), p=q))]))
  rows = []
  for c in classes:
    modality = str(rng.choice(["av", "a", "v"], p=[0.5, 0.35, 0.15]))
    s, e = _run(rng, T, 2, T)
    runs = {"a": [(s, e)], "v": [(s, e)]}
    if modality == "av" and rng.random() < 0.5:  # visual extent differs
      sv = int(np.clip(s + rng.integers(-1, 2), 0, e - 1))
      ev = int(np.clip(e + rng.integers(-1, 2), sv + 1, T))
      runs["v"] = [(sv, ev)]
    if rng.random() < 0.2:  # a second, short run (may touch or overlap)
      runs[modality[0]].append(_run(rng, T, 1, 3))
    amp = rng.uniform(0.7, 1.3)
    for m in ("a", "v"):
      if m in modality:
        for s_m, e_m in runs[m]:
          video.add(m, world.llp_latent[c], s_m, e_m,
                    _evidence(rng, amp, e_m - s_m))
          rows.append((m, int(c), s_m, e_m))
  return video, sorted(set(int(c) for c in classes)), rows


def _llp_quirks(rows_of, split_filenames, rng):
  """Real-data quirks: onset >= offset rows and touching same-class rows."""
  fn = split_filenames[0]
  c = rows_of[fn][0][1]
  rows_of[fn].append(("a", c, 9, 0))  # marks nothing
  if len(split_filenames) > 1:
    fn2 = split_filenames[1]
    rows_of[fn2].append(("a", rows_of[fn2][0][1], 5, 5))
  for fn in split_filenames[int(rng.integers(0, len(split_filenames))):]:
    rows = rows_of[fn]
    k = next((i for i, r in enumerate(rows) if r[3] - r[2] >= 2), None)
    if k is not None:  # split one run into two touching rows
      m, c, s, e = rows[k]
      rows[k:k + 1] = [(m, c, s, s + 1), (m, c, s + 1, e)]
      return


def _write_text(path: pathlib.Path, lines: list[str]) -> None:
  jsonio.write_text_atomic(path, "\n".join(lines) + "\n")


def _latents(world, videos) -> dict[str, list[np.ndarray]]:
  """Per modality, each video's [T, d] latent: events + its background."""
  out = {}
  for m in ("a", "v"):
    amp = np.concatenate([v.amp[m] for v in videos])
    z = np.split(amp @ world.proto[m],
                 np.cumsum([len(v.amp[m]) for v in videos])[:-1])
    out[m] = [z_i + v.bg[m] for z_i, v in zip(z, videos)]
  return out


def _write_features(world, rng_seed, space, out_dir, ids, latents,
                    row_index=None):
  """Renders one feature space for `ids` in chunks and writes the files."""
  spec = features_lib.SEGMENT_FEATURES[space]
  z_all = latents[world.modality(space)]
  rng = _rng(*rng_seed)
  for lo in range(0, len(ids), _CHUNK):
    chunk = range(lo, min(lo + _CHUNK, len(ids)))
    z = [z_all[i] for i in chunk]
    if row_index is not None:  # UnAV: L rows sampled from the 1-s latents
      z = [z_i[row_index[i]] for i, z_i in zip(chunk, z)]
    lens = [len(z_i) * spec.frames_per_segment for z_i in z]
    feats = world.render(rng, space, np.concatenate(z), spec.frames_per_segment)
    jobs = [(out_dir / spec.subdir / f"{ids[i]}.npy", x)
            for i, x in zip(chunk, np.split(feats, np.cumsum(lens)[:-1]))]
    parallel_lib.parallel_map(lambda job: jsonio.save_npy_atomic(*job), jobs,
                              _NUM_WRITERS)


def _write_llp(root, world, seed, sizes, ids, han_features,
               clip_clap_features):
  rng = _rng(seed, 1)
  splits = dict(zip(("train", "val", "test"), sizes))
  filenames, videos, rows_of, weak_of, split_of = [], [], {}, {}, {}
  for split, n in splits.items():
    for _ in range(n):
      vid = ids[len(filenames)]
      start = int(rng.integers(0, 300))
      fn = f"{vid}_{start}_{start + avvp_lib.LLP_NUM_SEGMENTS}"
      video, classes, rows = _llp_video(rng, world)
      filenames.append(fn)
      videos.append(video)
      rows_of[fn] = rows
      weak_of[fn] = [avvp_lib.LLP_CLASSES[c] for c in rng.permutation(classes)]
      split_of[fn] = split
  for split in ("val", "test"):
    in_split = [f for f in filenames if split_of[f] == split]
    if in_split:
      _llp_quirks(rows_of, in_split, rng)
  out = root / "LLP"
  weak_lines = {s: ["\t".join(avvp_lib.LLP_WEAK_HEADER)] for s in splits}
  for fn in filenames:
    weak_lines[split_of[fn]].append(f"{fn}\t{','.join(weak_of[fn])}")
  for split, name in avvp_lib.LLP_SPLIT_FILES.items():
    _write_text(out / name, weak_lines[split])
  _write_text(out / avvp_lib.LLP_FULL_FILE, weak_lines["train"]
              + weak_lines["val"][1:] + weak_lines["test"][1:])
  orphan = f"{ids[len(filenames)]}_30_400"  # matches no split clip
  for m, name in (("a", "audio"), ("v", "visual")):
    lines = ["\t".join(avvp_lib.LLP_EVAL_HEADER)]
    for fn in filenames:
      if split_of[fn] != "train":
        lines += [f"{fn}\t{s}\t{e}\t{avvp_lib.LLP_CLASSES[c]}"
                  for mm, c, s, e in rows_of[fn] if mm == m]
    lines.append(f"{orphan}\t0\t10\t{avvp_lib.LLP_CLASSES[0]}")
    _write_text(out / avvp_lib.LLP_EVAL_FILES[name], lines)

  spaces = (["clip", "clap"] if clip_clap_features else []) + (
      ["vggish", "res152", "r2plus1d_18"] if han_features else [])
  vids = [fn[:avvp_lib.LLP_ID_LEN] for fn in filenames]
  latents = _latents(world, videos)
  for s, space in enumerate(spaces):
    _write_features(world, (seed, 3, 0, s), space, out, vids, latents)
  for s, space in enumerate(["clip", "clap"] if clip_clap_features else []):
    text = world.text(_rng(seed, 5, 0, s), space, world.llp_latent)
    jsonio.save_npy_atomic(out / features_lib.EVENT_FEATURES[space], text)
  return out, splits, len(filenames) + 1


# ----------------------------------------------------------------------------
# UnAV-100


def _unav_video(rng, world, duration):
  """Annotated AV events (fractional times) plus unannotated uni-modal ones."""
  T = avvp_lib.num_segments_of(duration)
  video = _Video(rng, world.num_latents, T)
  annotations, av_classes = [], []
  for _ in range(int(rng.integers(1, 4))):
    if rng.random() < 0.5:
      k = int(rng.choice(world.shared_unav))
    else:
      k = int(rng.integers(0, len(avvp_lib.UNAV_CLASSES)))
    length = rng.uniform(2.0, min(10.0, duration))
    start = rng.uniform(0.0, duration - length)
    end = start + length
    if rng.random() < 0.3:
      start, end = float(math.floor(start)), float(min(math.ceil(end),
                                                       duration))
    else:
      start, end = round(start, 3), round(end, 3)
    s, e = avvp_lib.event_segments(start, end)
    t = np.arange(s, e)
    cover = (np.minimum(end, t + 1) - np.maximum(start, t)) / (
        np.minimum(duration, t + 1) - t)
    amp = rng.uniform(0.7, 1.3) * (0.5 + 0.5 * cover)
    for m in ("a", "v"):  # the two modalities fluctuate independently
      video.amp[m][s:e, k] = np.maximum(
          video.amp[m][s:e, k], _evidence(rng, amp, e - s))
    video.events.append(("av", k, s, e))
    annotations.append({"segment": [start, end],
                        "label": avvp_lib.UNAV_CLASSES[k], "label_id": k})
    av_classes.append(k)
  for _ in range(int(rng.integers(0, 3))):  # unannotated, as in real UnAV
    if rng.random() < 0.6:
      k = int(rng.choice(av_classes))
    else:
      k = int(rng.integers(0, len(avvp_lib.UNAV_CLASSES)))
    s, e = _run(rng, T, 2, 6)
    video.add(str(rng.choice(["a", "v"], p=[0.6, 0.4])), k, s, e,
              _evidence(rng, rng.uniform(0.7, 1.3), e - s))
  return video, annotations


def _feature_rows(rng, T: int) -> np.ndarray:
  """Which 1-s segment each stored row shows; L is sometimes != T."""
  L = int(rng.choice([T, T - 1, T + 2, 2 * T], p=[0.7, 0.1, 0.1, 0.1]))
  return ((np.arange(L) + 0.5) * T / L).astype(np.int64)


def _write_unav(root, world, seed, sizes, ids, max_duration,
                clip_clap_features):
  rng = _rng(seed, 2)
  subsets = [s for s, n in zip(avvp_lib.UNAV_SPLITS, sizes) for _ in range(n)]
  subsets = [subsets[i] for i in rng.permutation(len(subsets))]
  database, videos, rows, planted = {}, [], [], {}
  for vid, subset in zip(ids, subsets):
    duration = float(rng.uniform(10.0, max_duration))
    duration = int(duration) if rng.random() < 0.5 else round(duration, 2)
    video, annotations = _unav_video(rng, world, duration)
    database[vid] = {"duration": duration, "annotations": annotations,
                     "subset": subset}
    videos.append(video)
    rows.append(_feature_rows(rng, len(video.amp["a"])))
    planted[vid] = [{"modality": m, "label_id": k, "segments": [s, e]}
                    for m, k, s, e in video.events]
  out = root / "UnAV"
  out.mkdir(parents=True, exist_ok=True)
  json_path = out / "unav100_annotations.json"
  jsonio.write_text_atomic(
      json_path, json.dumps({"version": "unav100", "database": database}))
  jsonio.write_text_atomic(out / "planted_events.json", json.dumps(planted))
  latents = _latents(world, videos)
  for s, space in enumerate(["clip", "clap"] if clip_clap_features else []):
    _write_features(world, (seed, 3, 1, s), space, out, ids, latents,
                    row_index=rows)
    text = world.text(_rng(seed, 5, 1, s), space,
                      np.arange(len(avvp_lib.UNAV_CLASSES)))
    jsonio.save_npy_atomic(out / features_lib.EVENT_FEATURES[space], text)
  sizes = dict(zip(avvp_lib.UNAV_SPLITS, sizes))
  max_segments = max(avvp_lib.num_segments_of(v["duration"])
                     for v in database.values())
  return out, json_path, sizes, max_segments


def write_synthetic(
    root,
    *,
    seed: int = 0,
    num_llp: tuple[int, int, int] = (200, 60, 60),
    num_unav: tuple[int, int, int] = (240, 60, 20),
    unav_max_duration: float = 24,
    han_features: bool = True,
    clip_clap_features: bool = True,
) -> dict:
  """Writes `root/LLP/` and `root/UnAV/`; deterministic given `seed`.

  num_llp: clips in (train, val, test); num_unav: videos in (train,
  validation, test). Returns paths and counts.
  """
  if len(num_llp) != 3 or min(num_llp) < 1:
    raise ValueError(f"num_llp={num_llp}: need three split sizes >= 1.")
  if len(num_unav) != 3 or min(num_unav) < 1:
    raise ValueError(f"num_unav={num_unav}: need three split sizes >= 1.")
  if unav_max_duration < 10:
    raise ValueError(f"unav_max_duration={unav_max_duration} must be >= 10 s.")
  t0 = time.perf_counter()
  root = pathlib.Path(root)
  world = _World(seed)
  n_llp = sum(num_llp)
  ids = _random_ids(_rng(seed, 4), n_llp + 1 + sum(num_unav))
  llp_dir, llp_sizes, num_llp_ids = _write_llp(
      root, world, seed, num_llp, ids, han_features, clip_clap_features)
  unav_dir, json_path, unav_sizes, max_segments = _write_unav(
      root, world, seed, num_unav, ids[num_llp_ids:], unav_max_duration,
      clip_clap_features)
  summary = {
      "root": str(root),
      "llp_dir": str(llp_dir),
      "unav_dir": str(unav_dir),
      "unav_json": str(json_path),
      "unav_planted": str(unav_dir / "planted_events.json"),
      "llp_sizes": llp_sizes,
      "unav_sizes": unav_sizes,
      "unav_max_segments": max_segments,
      "llp_to_unav": dict(LLP_TO_UNAV),
      "num_feature_files": (
          n_llp * (2 * clip_clap_features + 3 * han_features)
          + sum(num_unav) * 2 * clip_clap_features + 4 * clip_clap_features),
  }
  logging.info("Synthetic dataset written to %s in %.1fs: %s", root,
               time.perf_counter() - t0, summary)
  return summary


COMPLETE = ".complete.json"  # written last, with the settings used


def written_with(root) -> dict | None:
  """The settings of the complete synthetic dataset under `root`, or None."""
  path = os.path.join(os.fspath(root), COMPLETE)
  return jsonio.read_json(path) if os.path.exists(path) else None


def write_once(root, spec: dict) -> bool:
  """write_synthetic(root, **spec) unless `root` already holds a complete
  dataset written with `spec` (then False); another spec there is an error.
  An interrupted write is started over."""
  spec = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
  done = written_with(root)
  if done is not None:
    if done != spec:
      raise ValueError(
          f"{root} holds a synthetic dataset written with other settings"
          f" than config.synthetic={spec}; use a new workdir or delete"
          f" {root}.")
    return False
  for sub in ("LLP", "UnAV"):
    shutil.rmtree(os.path.join(os.fspath(root), sub), ignore_errors=True)
  write_synthetic(root, **{
      k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
  jsonio.write_json_atomic(os.path.join(os.fspath(root), COMPLETE), spec)
  return True
