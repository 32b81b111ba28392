"""Tests for report.py (tables, report.md, results) and plots.py (PNGs)."""

import json
import os

import numpy as np
import pytest

from ear_jax import metrics as metrics_lib
from ear_jax import plots as plots_lib
from ear_jax import report as report_lib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ("Speech", "Dog", "Car")


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == PNG_MAGIC


def _scores(x):
  return {k: float(x + i) for i, k in enumerate(metrics_lib.AGGREGATE_KEYS)}


def test_markdown_table_has_paper_layout():
  md = report_lib.markdown_table({"EAR": _scores(10), "HAN": _scores(20)})
  lines = md.splitlines()
  head = [c.strip() for c in lines[0].strip("|").split("|")]
  assert head == ["Method", "Seg A", "Seg V", "Seg AV", "Seg Type",
                  "Seg Event", "Evt A", "Evt V", "Evt AV", "Evt Type",
                  "Evt Event", "Avg"]
  ear = [c.strip() for c in lines[2].strip("|").split("|")]
  assert ear[0] == "EAR" and ear[1] == "10.0" and ear[-1] == "14.5"
  assert len(lines) == 4


def test_collect_tables_skips_missing_rows(tmp_path):
  for split in ("val", "test"):
    metrics_lib.write_eval_json(tmp_path / f"{split}.json", _scores(1))
    (tmp_path / f"base_{split}.json").write_text(json.dumps(
        {"zero_shot": metrics_lib.with_avg(_scores(2))}))
  tables = report_lib.collect_tables({
      "P": (str(tmp_path / "{split}.json"), None),
      "Z": (str(tmp_path / "base_{split}.json"), "zero_shot"),
      "missing": (str(tmp_path / "nope_{split}.json"), None),
  })
  assert list(tables) == ["val", "test"]
  assert list(tables["test"]) == ["P", "Z"]
  assert tables["test"]["Z"]["seg_a"] == 2.0
  with pytest.raises(KeyError, match="weak"):
    report_lib.load_scores(str(tmp_path / "base_val.json"), "weak")


def test_flat_config_picks_dotted_fields():
  cfg = {"a": 1, "model": {"name": "ear", "dims": (1, 2)}, "x": object()}
  assert report_lib.flat_config(cfg) == {"a": 1, "model.name": "ear",
                                         "model.dims": [1, 2]}
  assert report_lib.flat_config(cfg, ["model.name", "nope"]) == {
      "model.name": "ear"}


def test_run_fields_leave_out_what_the_model_ignores():
  model = dict(name="han", amdf="asymmetric", erm="alternate", erm_layers=3,
               node_dim=128, han_layers=5, hidden_dim=64)
  keys = [f"model.{k}" for k in model] + ["seed"]
  han = report_lib.run_fields({"seed": 1, "model": model}, keys)
  assert han == {"model.name": "han", "model.han_layers": 5,
                 "model.hidden_dim": 64, "seed": 1}
  ear = report_lib.run_fields({"model": dict(model, name="ear")}, keys)
  assert "model.han_layers" not in ear and ear["model.erm_layers"] == 3
  ear_han = report_lib.run_fields(
      {"model": dict(model, name="ear", amdf="han")}, keys)
  assert ear_han["model.han_layers"] == 5 and ear_han["model.amdf"] == "han"
  gen = {"model": {"name": "generator", "num_layers": 2}}
  assert report_lib.run_fields(gen, ["model.name", "model.num_layers"]) == (
      {"model.name": "generator", "model.num_layers": 2})


def test_per_class_table():
  # 2 videos, 3 classes, 4 segments. Class 0: audio found exactly (F1 100),
  # visual half (one of two GT segments: TP 1, FN 1 -> 66.7); class 1:
  # audio false alarms only (0.0); class 2 in neither (-).
  pa = np.zeros((2, 3, 4), np.uint8)
  pv = np.zeros_like(pa)
  ga = np.zeros_like(pa)
  gv = np.zeros_like(pa)
  ga[0, 0, :2] = pa[0, 0, :2] = 1
  gv[1, 0, 2:] = 1
  pv[1, 0, 2] = 1
  pa[1, 1, 0] = 1
  f1 = metrics_lib.per_class_f1(pa, pv, ga, gv)
  md = report_lib.per_class_table(f1, CLASSES).splitlines()
  assert md[0] == ("| class | Seg A | Seg V | Seg AV | Evt A | Evt V |"
                   " Evt AV |")
  assert len(md) == 2 + len(CLASSES)
  cells = [[c.strip() for c in row.strip("|").split("|")] for row in md[2:]]
  assert cells[0][:4] == [CLASSES[0], "100.0", "66.7", "-"]
  assert cells[0][4] == "100.0"  # one audio event, matched
  assert cells[1][1:4] == ["0.0", "-", "-"]
  assert cells[2][1:] == ["-"] * 6


def test_plots_and_report_written(tmp_path):
  rng = np.random.default_rng(0)
  a = rng.random((3, 10)) > 0.5
  v = rng.random((3, 10)) > 0.5
  tl = plots_lib.timeline(str(tmp_path / "tl.png"), {"EAR": (a, v),
                          "HAN": (v, a)}, CLASSES, gt=(a, a), title="vid")
  empty = plots_lib.timeline(str(tmp_path / "empty.png"),
                             {"EAR": (a & False, v & False)}, CLASSES)
  adj = {f"uni_a/layer{l}": rng.normal(size=(3, 3)) for l in range(2)}
  adj["multi/layer0"] = rng.normal(size=(6, 6))
  heat = plots_lib.adjacency_heatmaps(adj, CLASSES, str(tmp_path / "erm_"))
  assert sorted(heat) == ["multi", "multi_raw", "uni_a", "uni_a_raw"]
  rows = [{"step": s, "train/loss": 1.0 / s, "train/lr": 0.1,
           "train/seg_a": 0.5} for s in range(1, 6)]
  rows += [{"step": 5, "val/seg_type": 40.0, "epoch": 1}]
  curve = plots_lib.training_curves(rows, str(tmp_path / "c.png"), "s3")
  assert plots_lib.training_curves([], str(tmp_path / "none.png")) is None
  for p in [tl, empty, curve, *heat.values()]:
    assert _is_png(p), p

  tables = {"val": {"EAR": _scores(1)}, "test": {"EAR": _scores(2),
                                                  "HAN": _scores(3)}}
  path = report_lib.write_report(
      str(tmp_path / "report.md"), title="T", tables=tables,
      configs={"stage3": {"model.name": "ear"}}, curves={"stage3": curve},
      heatmaps=heat, timelines={"video": tl})
  md = open(path).read()
  assert "### val split" in md and "### test split" in md
  assert md.count("| Method |") == 2 and "| HAN |" in md
  assert "](c.png)" in md and "](erm_multi.png)" in md
  assert "`model.name` | `\"ear\"`" in md
  for p in [curve, tl, *heat.values()]:
    assert os.path.basename(p) in md


def test_adjacency_sum_and_symmetrise():
  m = np.arange(9.0).reshape(3, 3)
  groups = plots_lib.group_layers({"multi/layer0": m, "multi/layer1": m,
                                   "uni_a/layer0": m})
  raw, sym = plots_lib.summed_adjacency(groups["multi"])
  np.testing.assert_allclose(raw, 2 * m)
  np.testing.assert_allclose(sym, m + m.T)
  assert plots_lib.node_names(6, CLASSES)[3] == "v:Speech"
  with pytest.raises(ValueError, match="2C"):
    plots_lib.node_names(4, CLASSES)
  with pytest.raises(ValueError, match="square"):
    plots_lib.group_layers({"x": np.zeros((2, 3))})


def test_timeline_rejects_wrong_class_count(tmp_path):
  with pytest.raises(ValueError, match="C = 3"):
    plots_lib.timeline(str(tmp_path / "x.png"),
                       {"EAR": (np.zeros((2, 10)), np.zeros((2, 10)))},
                       CLASSES)
