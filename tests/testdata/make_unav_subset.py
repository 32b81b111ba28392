"""Writes tests/testdata/unav100/unav100_subset.json from the full UnAV file.

  python tests/testdata/make_unav_subset.py --src=PATH/unav100_annotations.json

Keeps the file's key order and records byte for byte (json.dumps of the parsed
records), choosing, per split, the first videos plus greedily the videos that
cover every label_id, and every video with a quirk the reader must handle:
the longest (60 s) and shortest durations, integer durations, events ending
exactly at the duration, overlapping events of one class, the most events.
"""

import argparse
import json
import math


def _quirks(rec):
  dur = rec["duration"]
  anns = rec.get("annotations") or []
  out = set()
  if isinstance(dur, int):
    out.add("int_duration")
  if dur >= 59.5:
    out.add("longest")
  if dur <= 10.0:
    out.add("shortest")
  if any(a["segment"][1] == dur for a in anns):
    out.add("ends_at_duration")
  if any(float(a["segment"][1]).is_integer() for a in anns):
    out.add("integer_end")
  if any(float(a["segment"][0]).is_integer() for a in anns):
    out.add("integer_start")
  if not float(dur).is_integer() and math.ceil(dur) - dur < 0.05:
    out.add("ceil_just_above")
  by_class = {}
  for a in anns:
    by_class.setdefault(a["label_id"], []).append(a["segment"])
  for segs in by_class.values():
    segs = sorted(segs)
    if any(b[0] < a[1] for a, b in zip(segs, segs[1:])):
      out.add("overlap_same_class")
    if any(b[0] == a[1] for a, b in zip(segs, segs[1:])):
      out.add("touching_same_class")
  if len(anns) >= 20:
    out.add("many_events")
  return out


def subset(database, first=40, per_quirk=3):
  keep = set()
  for split in ("train", "validation", "test"):
    vids = [v for v, r in database.items() if r["subset"] == split]
    keep.update(vids[:first])
    covered = set()
    for v in vids:  # greedy class cover, in file order
      ids = {a["label_id"] for a in database[v].get("annotations") or []}
      if ids - covered:
        keep.add(v)
        covered |= ids
    seen = {}
    for v in vids:
      for q in _quirks(database[v]):
        if seen.get(q, 0) < per_quirk:
          seen[q] = seen.get(q, 0) + 1
          keep.add(v)
  return {v: r for v, r in database.items() if v in keep}


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--src", required=True)
  p.add_argument("--out", default="tests/testdata/unav100/unav100_subset.json")
  args = p.parse_args()
  with open(args.src, encoding="utf-8") as f:
    data = json.load(f)
  data["database"] = subset(data["database"])
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(data, f)
  print(f"{len(data['database'])} videos -> {args.out}")


if __name__ == "__main__":
  main()
