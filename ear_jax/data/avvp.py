"""LLP CSVs and the UnAV-100 JSON -> per-video label records (numpy only).

Formats: docs/METHOD.md "Data and features", README "Data"
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib

from absl import logging
import numpy as np

from ear_jax import jsonio

# pylint: disable=invalid-name

LLP_CLASSES = (
    "Speech", "Car", "Cheering", "Dog", "Cat", "Frying_(food)",
    "Basketball_bounce", "Fire_alarm", "Chainsaw", "Cello", "Banjo",
    "Singing", "Chicken_rooster", "Violin_fiddle", "Vacuum_cleaner",
    "Baby_laughter", "Accordion", "Lawn_mower", "Motorcycle", "Helicopter",
    "Acoustic_guitar", "Telephone_bell_ringing", "Baby_cry_infant_cry",
    "Blender", "Clapping",
)  # pyformat: disable

# Index = label_id. "playing base guitar" is spelled as in the source.
UNAV_CLASSES = (
    "man speaking", "woman speaking", "kid speaking", "male singing",
    "people laughing", "car passing by", "baby laughter", "wind noise",
    "people clapping", "people shouting", "people crowd", "female singing",
    "dog barking", "playing acoustic guitar", "people eating",
    "people cheering", "basketball bounce", "engine knocking",
    "playing tennis", "baby babbling", "striking bowling",
    "playing badminton", "cat meowing", "people slapping", "playing piano",
    "baby crying", "people burping", "orchestra", "playing drum kit",
    "playing violin", "machine gun shooting", "child singing",
    "people nose blowing", "playing electronic organ", "people sneezing",
    "dog howling", "skateboarding", "playing base guitar", "auto racing",
    "sea waves", "playing table tennis", "people coughing",
    "people whispering", "playing ukulele", "sheep bleating",
    "playing tabla", "fire truck siren", "playing volleyball", "beat boxing",
    "playing trumpet", "thunder", "playing cello", "playing harp",
    "hammering nails", "people running", "sailing", "telephone bell ringing",
    "frog croaking", "driving motorcycle", "playing cornet",
    "playing clarinet", "train wheels squealing", "playing flute",
    "playing trombone", "playing erhu", "bull bellowing", "raining",
    "skidding", "chainsawing trees", "police car siren", "playing saxophone",
    "fireworks banging", "driving buses", "tap dancing", "airplane flyby",
    "people whistling", "train horning", "vacuum cleaner cleaning floors",
    "playing accordion", "bird chirping", "vehicle honking",
    "church bell ringing", "playing snare drum", "playing synthesizer",
    "typing on computer keyboard", "singing choir", "lions roaring",
    "people slurping", "helicopter", "horse clip-clop", "water burbling",
    "lawn mowing", "playing banjo", "playing zither", "playing harmonica",
    "people battle cry", "people sobbing", "ambulance siren",
    "rope skipping", "hair dryer drying",
)  # pyformat: disable

LLP_NUM_SEGMENTS = 10  # 10-s clips, 1-s segments
LLP_ID_LEN = 11  # the feature-file key is filename[:11], as the official loader
LLP_SPLIT_FILES = {
    "train": "AVVP_train.csv",
    "val": "AVVP_val_pd.csv",
    "test": "AVVP_test_pd.csv",
}
LLP_SPLITS = tuple(LLP_SPLIT_FILES)  # ("train", "val", "test")
LLP_FULL_FILE = "AVVP_dataset_full.csv"
LLP_EVAL_FILES = {"audio": "AVVP_eval_audio.csv",
                  "visual": "AVVP_eval_visual.csv"}
LLP_WEAK_HEADER = ("filename", "event_labels")
LLP_EVAL_HEADER = ("filename", "onset", "offset", "event_labels")

UNAV_SPLITS = ("train", "validation", "test")
_UNAV_ALIASES = {"val": "validation"}


@dataclasses.dataclass(frozen=True)
class LLPSplit:
  """One LLP split: weak labels and (val/test) dense per-modality GT."""

  name: str  # "train" | "val" | "test"
  filenames: list[str]  # full clip names in CSV order, "BjCEufrlXm4_20_30"
  ids: list[str]  # filename[:11], the feature-file key
  weak: np.ndarray  # uint8 [N, C]
  gt_a: np.ndarray | None  # uint8 [N, C, 10] (class, segment); None for train
  gt_v: np.ndarray | None  # uint8 [N, C, 10]


@dataclasses.dataclass(frozen=True)
class UnAVSplit:
  """One UnAV-100 split: AV labels on 1-s segments, padded to a fixed T."""

  name: str  # "train" | "validation" | "test"
  ids: list[str]  # JSON key order
  durations: np.ndarray  # float64 [N]
  num_segments: np.ndarray  # int32 [N], ceil(duration)
  y_av: np.ndarray  # uint8 [N, T_max, 100]
  valid: np.ndarray  # uint8 [N, T_max], 1 on [0, T_v)


# ----------------------------------------------------------------------------
# LLP


def _read_tsv(path: pathlib.Path, header: tuple[str, ...]):
  """Yields (line number, fields) of a tab-separated file after its header."""
  if not path.is_file():
    raise FileNotFoundError(
        f"LLP annotation file {path} not found; expected the AVVP CSVs"
        f" ({', '.join(LLP_SPLIT_FILES.values())}, "
        f"{', '.join(LLP_EVAL_FILES.values())}) in {path.parent}."
    )
  # newline="" keeps a stray "\r" visible instead of silently dropping it.
  try:
    with open(path, encoding="utf-8", newline="") as f:
      lines = f.read().split("\n")
  except UnicodeDecodeError as e:
    raw = path.read_bytes()
    lineno = raw.count(b"\n", 0, e.start) + 1
    raise ValueError(
        f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start:e.start + 1]!r}"
        f" at offset {e.start}); save the file as UTF-8.") from e
  if lines and not lines[-1]:
    lines.pop()  # the trailing newline
  if not lines:
    raise ValueError(
        f"{path}:1: file is empty; expected a tab-separated header"
        f" {chr(9).join(header)!r} and one row per clip."
    )
  got = tuple(lines[0].split("\t"))
  if got != header:
    raise ValueError(
        f"{path}:1: header is {lines[0]!r}; expected the tab-separated"
        f" columns {list(header)}. Is this an AVVP annotation file with tab"
        " separators?"
    )
  for lineno, line in enumerate(lines[1:], start=2):
    fields = line.split("\t")
    if len(fields) != len(header):
      raise ValueError(
          f"{path}:{lineno}: expected {len(header)} tab-separated fields"
          f" {list(header)}, got {len(fields)}: {line[:100]!r}"
      )
    yield lineno, fields


def _class_index(path, lineno, name, index, classes) -> int:
  c = index.get(name)
  if c is None:
    raise ValueError(
        f"{path}:{lineno}: unknown class name {name!r}; valid classes are:"
        f" {', '.join(classes)}"
    )
  return c


def _read_llp_eval(
    path: pathlib.Path,
    row_of: dict[str, int],
    classes,
    index,
    split: str,
    num_segments: int = LLP_NUM_SEGMENTS,
) -> np.ndarray:
  """Dense GT uint8 [N, C, T] of the clips in `row_of` (exact filename)."""
  gt = np.zeros((len(row_of), len(classes), num_segments), np.uint8)
  ignored, empty = set(), 0
  for lineno, (filename, onset_s, offset_s, label) in _read_tsv(
      path, LLP_EVAL_HEADER
  ):
    c = _class_index(path, lineno, label, index, classes)
    bounds = []
    for what, s in (("onset", onset_s), ("offset", offset_s)):
      t = int(s) if s.isascii() and s.isdigit() else -1
      if not 0 <= t <= num_segments:
        raise ValueError(
            f"{path}:{lineno}: {what}={s!r} is not an integer second in"
            f" [0, {num_segments}]."
        )
      bounds.append(t)
    row = row_of.get(filename)
    if row is None:
      ignored.add(filename)
      continue
    onset, offset = bounds
    if onset >= offset:
      empty += 1  # marks nothing, as in the official GT
    gt[row, c, onset:offset] = 1
  logging.info(
      "%s: %d filenames outside split %r ignored; %d rows of the split have"
      " onset >= offset (mark nothing); %d of %d clips have no GT segment.",
      path.name, len(ignored), split, empty,
      int((gt.reshape(len(gt), -1).max(1, initial=0) == 0).sum()), len(gt),
  )
  return gt


def read_llp_split(
    annotations_dir, split: str, classes=LLP_CLASSES
) -> LLPSplit:
  """Reads an LLP split; val/test also get dense audio and visual GT."""
  if split not in LLP_SPLIT_FILES:
    raise ValueError(
        f"unknown LLP split {split!r}; expected one of {list(LLP_SPLIT_FILES)}"
    )
  classes = tuple(classes)
  index = {name: c for c, name in enumerate(classes)}
  adir = pathlib.Path(annotations_dir)
  path = adir / LLP_SPLIT_FILES[split]
  filenames, ids, weak_rows = [], [], []
  line_of_id, row_of = {}, {}
  for lineno, (filename, labels) in _read_tsv(path, LLP_WEAK_HEADER):
    if len(filename) < LLP_ID_LEN:
      raise ValueError(
          f"{path}:{lineno}: filename {filename!r} is shorter than the"
          f" {LLP_ID_LEN}-character YouTube id it must start with."
      )
    vid = filename[:LLP_ID_LEN]
    if vid in line_of_id:
      raise ValueError(
          f"{path}:{lineno}: id {vid!r} of {filename!r} already appears on"
          f" line {line_of_id[vid]}; ids (filename[:{LLP_ID_LEN}]) must be"
          " unique within a split because they name the feature files."
      )
    line_of_id[vid] = lineno
    row_of[filename] = len(filenames)
    filenames.append(filename)
    ids.append(vid)
    weak_rows.append(
        [_class_index(path, lineno, n, index, classes)
         for n in labels.split(",")]
    )
  if not filenames:
    raise ValueError(f"{path}:2: the file has a header but no clips.")
  _check_split_overlap(adir, split, line_of_id)
  weak = np.zeros((len(filenames), len(classes)), np.uint8)
  for row, cs in enumerate(weak_rows):
    weak[row, cs] = 1
  gt_a = gt_v = None
  if split != "train":
    gt_a = _read_llp_eval(
        adir / LLP_EVAL_FILES["audio"], row_of, classes, index, split
    )
    gt_v = _read_llp_eval(
        adir / LLP_EVAL_FILES["visual"], row_of, classes, index, split
    )
  logging.info("LLP %s: %d clips from %s.", split, len(filenames), path)
  return LLPSplit(split, filenames, ids, weak, gt_a, gt_v)


def format_llp_eval(rows) -> str:
  """AVVP_eval_{audio,visual}.csv text of (filename, onset, offset, label)
  rows: the LLP_EVAL_HEADER columns, tab-separated, integer seconds, end
  exclusive, one row per event (what the official evaluation reads)."""
  lines = ["\t".join(LLP_EVAL_HEADER)]
  for filename, onset, offset, label in rows:
    for name, x in (("filename", filename), ("label", label)):
      if not x or any(ch in str(x) for ch in "\t\n\r"):
        raise ValueError(f"{name} {x!r} is empty or holds a tab/newline.")
    lines.append(f"{filename}\t{int(onset)}\t{int(offset)}\t{label}")
  return "\n".join(lines) + "\n"


def read_llp_eval(path, filenames, classes=LLP_CLASSES,
                  num_segments: int = LLP_NUM_SEGMENTS) -> np.ndarray:
  """uint8 [N, C, T] rows of an AVVP eval CSV (GT or predictions written by
  format_llp_eval) for `filenames` in that order; rows of other filenames
  are ignored; a filename without rows is all zeros."""
  classes = tuple(classes)
  row_of = {f: i for i, f in enumerate(filenames)}
  index = {name: c for c, name in enumerate(classes)}
  return _read_llp_eval(pathlib.Path(path), row_of, classes, index, "given",
                        num_segments)


def llp_eval_filenames(path) -> list[str]:
  """The filenames an AVVP eval CSV (GT or predictions) has rows for, in
  first-appearance order."""
  return list(dict.fromkeys(
      fields[0] for _, fields in _read_tsv(pathlib.Path(path),
                                           LLP_EVAL_HEADER)))


def _check_split_overlap(adir: pathlib.Path, split: str,
                         line_of_id: dict[str, int]) -> None:
  """An id in two splits (present in adir) is an error naming both lines."""
  for other, name in LLP_SPLIT_FILES.items():
    other_path = adir / name
    if other == split or not other_path.is_file():
      continue
    st = other_path.stat()
    other_ids = _split_id_lines(str(other_path), st.st_mtime_ns, st.st_size)
    common = line_of_id.keys() & other_ids.keys()
    if common:
      vid = min(common, key=line_of_id.get)
      raise ValueError(
          f"{adir / LLP_SPLIT_FILES[split]}:{line_of_id[vid]}: id {vid!r} is"
          f" also in split {other!r} ({other_path}:{other_ids[vid]}), like"
          f" {len(common) - 1} more; a clip must be in one split only (it"
          " would be trained and evaluated on). Remove it from one file.")


@functools.lru_cache(maxsize=8)
def _split_id_lines(path: str, mtime_ns: int, size: int) -> dict[str, int]:
  del mtime_ns, size  # cache keys: a changed file is read again
  return {fields[0][:LLP_ID_LEN]: lineno for lineno, fields in
          _read_tsv(pathlib.Path(path), LLP_WEAK_HEADER)}


# ----------------------------------------------------------------------------
# UnAV-100


def num_segments_of(duration: float) -> int:
  """T_v = ceil(duration): whole durations stay, others round up."""
  return int(math.ceil(duration))


def event_segments(start: float, end: float) -> tuple[int, int]:
  """Segment span [floor(start), ceil(end)) that covers an event."""
  return int(math.floor(start)), int(math.ceil(end))


def _is_number(x) -> bool:
  t = type(x)  # bool is not a number here
  return t is int or (t is float and math.isfinite(x))


def _load_unav_database(json_path) -> tuple[pathlib.Path, dict]:
  path = pathlib.Path(json_path)
  if not path.is_file():
    raise FileNotFoundError(
        f"UnAV-100 annotation file {path} not found; expected"
        " unav100_annotations.json (from the UnAV-100 release, or written by"
        " ear_jax.data.synthetic.write_synthetic)."
    )
  data = jsonio.read_json(path, unique_keys=True)
  if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
    raise ValueError(
        f'{path}: no "database" object at the top level; expected'
        ' {"version": ..., "database": {"<video id>": {"subset": ...,'
        ' "duration": ..., "annotations": [...]}}}.'
    )
  return path, data["database"]


def _parse_unav_video(path, vid, rec, name_of_id, id_of_name):
  """Validates one record -> (id, subset, duration, T_v, ((s, e, id), ...))."""
  where = f"{path}: video {vid!r}"
  if not isinstance(rec, dict):
    raise ValueError(f"{where}: record is {type(rec).__name__}, not object.")
  subset = rec.get("subset")
  if not isinstance(subset, str):
    raise ValueError(f"{where}: missing or non-string 'subset' ({subset!r}).")
  duration = rec.get("duration")
  if not _is_number(duration) or duration <= 0:
    raise ValueError(
        f"{where}: 'duration' is {duration!r}; expected seconds > 0."
    )
  t_v = num_segments_of(duration)
  num_classes = len(UNAV_CLASSES)
  events = []
  for k, ann in enumerate(rec.get("annotations") or ()):
    if not isinstance(ann, dict):
      ann = {}
    seg, label, label_id = (ann.get("segment"), ann.get("label"),
                            ann.get("label_id"))
    if (not isinstance(seg, list) or len(seg) != 2
        or not _is_number(seg[0]) or not _is_number(seg[1])):
      raise ValueError(
          f"{where}: annotation {k} has segment {seg!r}; expected"
          " [start, end] in seconds."
      )
    if (type(label_id) is not int  # pylint: disable=unidiomatic-typecheck
        or not 0 <= label_id < num_classes or not isinstance(label, str)):
      raise ValueError(
          f"{where}: annotation {k} has label {label!r}, label_id"
          f" {label_id!r}; expected a class name and an id in"
          f" [0, {num_classes})."
      )
    known = name_of_id.setdefault(label_id, label)
    if known != label or id_of_name.setdefault(label, label_id) != label_id:
      raise ValueError(
          f"{where}: annotation {k} has label {label!r} with label_id"
          f" {label_id}, but elsewhere the file pairs label_id {label_id}"
          f" with {known!r} and {label!r} with label_id"
          f" {id_of_name.get(label)}; every label must map to one label_id."
      )
    s, e = event_segments(*seg)
    if not (0 <= s and e <= t_v and seg[0] <= seg[1]):
      raise ValueError(
          f"{where}: annotation {k} ({label!r}) segment {seg} maps to"
          f" segments [{s}, {e}), outside the video's {t_v} segments"
          f" (duration {duration}s) or reversed."
      )
    events.append((s, e, label_id))
  return vid, subset.lower(), float(duration), t_v, tuple(events)


@functools.lru_cache(maxsize=4)
def _parse_unav_cached(path_str: str, mtime_ns: int, size: int):
  del mtime_ns, size  # cache keys only: a rewritten file is parsed again
  path, database = _load_unav_database(path_str)
  name_of_id, id_of_name = {}, {}
  videos = tuple(_parse_unav_video(path, vid, rec, name_of_id, id_of_name)
                 for vid, rec in database.items())
  return path, videos, name_of_id


def _parse_unav(json_path):
  """Validated (path, videos, label_id -> label) of a UnAV JSON file."""
  path = pathlib.Path(json_path)
  if not path.is_file():
    _load_unav_database(path)  # raises FileNotFoundError
  st = path.stat()
  path, videos, name_of_id = _parse_unav_cached(
      os.fspath(path.resolve()), st.st_mtime_ns, st.st_size)
  return pathlib.Path(json_path), videos, dict(name_of_id)


def _check_class_order(path, name_of_id) -> None:
  diff = sorted(i for i, n in name_of_id.items() if UNAV_CLASSES[i] != n)
  if diff:
    logging.warning(
        "%s uses a class order different from UNAV_CLASSES for %d label_ids"
        " (e.g. %s). Labels follow label_id; order the text embeddings by"
        " read_unav_class_names().",
        path, len(diff),
        ", ".join(f"{i}: {name_of_id[i]!r} vs {UNAV_CLASSES[i]!r}"
                  for i in diff[:5]),
    )


def read_unav_class_names(json_path) -> list[str]:
  """The file's label_id -> label map as a list (UNAV_CLASSES where unused)."""
  path, _, name_of_id = _parse_unav(json_path)
  _check_class_order(path, name_of_id)
  unused = [i for i in range(len(UNAV_CLASSES)) if i not in name_of_id]
  if unused:
    logging.info("%s: %d label_ids unused; named from UNAV_CLASSES.",
                 path, len(unused))
  return [name_of_id.get(i, n) for i, n in enumerate(UNAV_CLASSES)]


def read_unav_split(
    json_path, split: str, max_segments: int | None = None
) -> UnAVSplit:
  """Reads one UnAV-100 split as AV labels on 1-s segments (docs/METHOD.md)."""
  name = _UNAV_ALIASES.get(split, split)
  if name not in UNAV_SPLITS:
    raise ValueError(
        f"unknown UnAV split {split!r}; expected one of {list(UNAV_SPLITS)}"
        " (or 'val')."
    )
  path, videos, name_of_id = _parse_unav(json_path)
  _check_class_order(path, name_of_id)
  sizes = {}
  for v in videos:
    sizes[v[1]] = sizes.get(v[1], 0) + 1
  chosen = [v for v in videos if v[1] == name]
  if not chosen:
    raise ValueError(
        f"{path}: no video has subset {name!r}; subsets present: {sizes}."
    )
  if max_segments is None:
    max_segments = max(v[3] for v in videos)  # shared by all splits
  else:
    longest = max(chosen, key=lambda v: v[3])
    if max_segments < longest[3]:
      raise ValueError(
          f"max_segments={max_segments} is smaller than video {longest[0]!r}"
          f" ({longest[3]} segments, duration {longest[2]}s) of {path} split"
          f" {name!r}; use max_segments >= {longest[3]}."
      )
  n = len(chosen)
  y_av = np.zeros((n, max_segments, len(UNAV_CLASSES)), np.uint8)
  valid = np.zeros((n, max_segments), np.uint8)
  t_v = np.array([v[3] for v in chosen], np.int32)
  valid[np.arange(max_segments)[None, :] < t_v[:, None]] = 1
  no_events = 0
  for row, (_, _, _, _, events) in enumerate(chosen):
    no_events += not events
    for s, e, c in events:
      y_av[row, s:e, c] = 1
  logging.info(
      "UnAV %s: %d videos (file %s: %s); T_max=%d; %d without annotations"
      " (all-zero labels).",
      name, n, os.fspath(path), sizes, max_segments, no_events,
  )
  return UnAVSplit(
      name=name,
      ids=[v[0] for v in chosen],
      durations=np.array([v[2] for v in chosen], np.float64),
      num_segments=t_v,
      y_av=y_av,
      valid=valid,
  )
