"""Tests for the demo stage: orchestration, resume, tables, report, results.

The stage runners are replaced by fakes that write what the real ones write
(stage 3: an untrained parser checkpoint), so this runs in seconds; set
EAR_JAX_SLOW_TESTS=1 to also run the real :tiny pipeline end to end.
"""

import json
import os
import re

import numpy as np
import pytest

from ear_jax.configs import demo as demo_config
from ear_jax import jsonio
from ear_jax import metrics as metrics_lib
from ear_jax import stages as stages_lib
from ear_jax import trainer as trainer_lib
from ear_jax import writer as writer_lib
from ear_jax.data import avvp
from ear_jax.stages import demo as demo_lib
from parse_test import save_untrained_parser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROW_NAMES = list(demo_lib.ROWS)


def _scores(seed):
  rng = np.random.default_rng(seed)
  return {k: float(v) for k, v in
          zip(metrics_lib.AGGREGATE_KEYS, rng.uniform(10, 90, 10))}


def _fake_metrics(cfg, val_key):
  w = writer_lib.MetricWriter(cfg.workdir)
  for step in (5, 10):
    w.write(step, {"train/loss": 1.0 / step, "train/lr": 1e-3})
    w.write(step, {val_key: float(step), "epoch": step // 5})


class FakeStages:
  """Stand-ins for the four stage runners; record the configs they got."""

  def __init__(self):
    self.calls = []

  def s1(self, cfg):
    self.calls.append(("stage1", cfg))
    trainer_lib.write_config(cfg.workdir, cfg)
    _fake_metrics(cfg, "val/seg_av")
    jsonio.write_json_atomic(f"{cfg.workdir}/eval/unav_validation.json",
                             {"seg_av": 1.0})

  def s2(self, cfg):
    self.calls.append(("stage2", cfg))
    trainer_lib.write_config(cfg.workdir, cfg)
    for i, split in enumerate(("val", "test")):
      metrics_lib.write_eval_json(f"{cfg.workdir}/eval/{split}.json",
                                  _scores(i))
      jsonio.write_json_atomic(
          f"{cfg.workdir}/eval/baselines_{split}.json",
          {"weak_everywhere": metrics_lib.with_avg(_scores(10 + i)),
           "zero_shot": metrics_lib.with_avg(_scores(20 + i))})
    # Published last by the real stage 2: the demo's mark of completion.
    jsonio.write_json_atomic(f"{cfg.workdir}/LLP_Dataset/manifest.json", {})

  def s3(self, cfg):
    self.calls.append((os.path.basename(cfg.workdir), cfg))
    save_untrained_parser(cfg)
    _fake_metrics(cfg, "val/seg_type")
    han = 2 * (cfg.model.name == "han")
    for i, split in enumerate(("val", "test")):
      metrics_lib.write_eval_json(f"{cfg.workdir}/eval/{split}.json",
                                  _scores(30 + i + han))


@pytest.fixture
def fake_stages(monkeypatch):
  fake = FakeStages()
  runners = {"pretrain_generator": fake.s1, "generate_pseudo_labels": fake.s2,
             "train_parser": fake.s3}
  monkeypatch.setattr(stages_lib, "get_runner", runners.__getitem__)
  return fake


def _tiny_config(workdir):
  c = demo_config.get_config("tiny")
  c.workdir = str(workdir)
  c.progress = False
  c.synthetic.num_llp = (6, 4, 4)
  c.synthetic.num_unav = (2, 1, 1)
  return c


def _check_table(text, split):
  """The printed table of `split`: paper header, one row per method."""
  block = text.split(f"== LLP {split}")[1].split("\n\n")[0].splitlines()
  assert "Segment-level" in block[1] and "Event-level" in block[1]
  assert re.sub(r"\s+", " ", block[2]).strip() == (
      "| A V AV Type Event | A V AV Type Event | Avg")
  rows = block[4:]
  assert [r.split("|")[0].strip() for r in rows] == ROW_NAMES
  for r in rows:
    numbers = re.findall(r"\d+\.\d", r)
    assert len(numbers) == 11, r


def test_demo_orchestration_tables_report_and_resume(tmp_path, fake_stages,
                                                      capsys, monkeypatch):
  c = _tiny_config(tmp_path)
  demo_lib.run(c)
  w = str(tmp_path)
  # Stage order and wiring of the sub-configs.
  assert [n for n, _ in fake_stages.calls] == ["stage1", "stage2", "stage3",
                                               "stage3_han"]
  cfgs = dict(fake_stages.calls)
  llp, unav = f"{w}/data/LLP", f"{w}/data/UnAV"
  assert cfgs["stage1"].data.unav_root == unav
  assert cfgs["stage2"].generator_workdir == f"{w}/stage1"
  for name in ("stage2", "stage3", "stage3_han"):
    assert cfgs[name].data.llp_root == llp
    assert cfgs[name].workdir == f"{w}/{name}"
  for name in ("stage3", "stage3_han"):
    assert cfgs[name].pseudo_labels_dir == f"{w}/stage2"
  assert cfgs["stage3"].model.name == "ear"
  assert cfgs["stage3_han"].model.name == "han"
  assert os.path.exists(f"{llp}/AVVP_test_pd.csv")
  assert os.path.exists(f"{unav}/unav100_annotations.json")

  printed = capsys.readouterr().out
  for i, title in enumerate(["Stage 1", "Stage 2", "EAR parser", "HAN"], 1):
    assert re.search(rf"== \[{i}/4\] .*{title}", printed), title
  _check_table(printed, "val")
  _check_table(printed, "test")

  with open(f"{w}/results.json") as f:
    results = json.load(f)
  assert list(results["tables"]) == ["val", "test"]
  assert list(results["tables"]["test"]) == ROW_NAMES
  ear = metrics_lib.with_avg(_scores(31))
  assert results["tables"]["test"]["EAR"] == pytest.approx(ear)
  assert results["tables"]["test"]["Zero-shot CLIP/CLAP"] == pytest.approx(
      metrics_lib.with_avg(_scores(21)))

  md = open(f"{w}/report.md").read()
  for name in ROW_NAMES:
    assert md.count(f"| {name} |") == 2, name  # val and test tables
  assert "### val split" in md and "### test split" in md
  pngs = re.findall(r"\]\(([^)]+\.png)\)", md)
  kinds = {os.path.basename(p).split("_")[0] for p in pngs}
  assert kinds == {"curves", "erm", "timeline"}
  assert "figures/erm_multi.png" in pngs and "figures/erm_uni_a.png" in pngs
  assert "Figures not drawn" not in md
  for p in pngs:
    with open(os.path.join(w, p), "rb") as f:
      assert f.read(8) == PNG_MAGIC, p
  assert "| `model.name` | `\"han\"` |" in md
  # Per-class F1 (test) of each parser, one row per LLP class.
  per_class = md.split("## Per-class F1 (test split)")[1].split("\n## ")[0]
  for parser in ("EAR", "HAN"):
    table = per_class.split(f"### {parser}\n\n")[1].split("\n\n")[0]
    assert len(table.splitlines()) == 2 + len(avvp.LLP_CLASSES), parser
    assert table.splitlines()[0] == ("| class | Seg A | Seg V | Seg AV |"
                                     " Evt A | Evt V | Evt AV |")
  # Each run's configuration shows the fields its model reads.
  runs = md.split("## Configuration")[1]
  han_cfg = runs.split("### stage3_han\n")[1].split("\n###")[0]
  ear_cfg = runs.split("### stage3\n")[1].split("\n###")[0]
  for field in ("model.amdf", "model.erm", "model.erm_layers",
                "model.node_dim"):
    assert f"`{field}`" not in han_cfg and f"`{field}`" in ear_cfg, field
  assert "`model.han_layers`" in han_cfg
  assert "`model.han_layers`" not in ear_cfg  # EAR reads it with amdf=han

  # Re-running resumes: every stage is finished, nothing runs again.
  fake_stages.calls.clear()
  demo_lib.run(c)
  assert not fake_stages.calls
  printed = capsys.readouterr().out
  assert printed.count("skipped") == 4 and "already written" in printed
  # A changed stage config re-runs that stage only (figures tested above).
  monkeypatch.setattr(demo_lib, "write_outputs", lambda *a: None)
  c.stage3_han.total_epochs = 3
  demo_lib.run(c)
  assert [n for n, _ in fake_stages.calls] == ["stage3_han"]
  # ... from scratch: a run of other settings cannot be continued.
  assert (f"total_epochs changed: restarting {w}/stage3_han"
          in capsys.readouterr().out)
  # A changed upstream stage restarts everything that reads it.
  fake_stages.calls.clear()
  c.stage1.total_epochs = 3
  demo_lib.run(c)
  assert [n for n, _ in fake_stages.calls] == ["stage1", "stage2", "stage3",
                                               "stage3_han"]
  printed = capsys.readouterr().out
  assert printed.count("restarting") == 4
  assert f"total_epochs changed: restarting {w}/stage1" in printed


def test_demo_report_with_han_as_the_main_parser(tmp_path, fake_stages):
  """Every optional figure works with every parser: HAN has no ERM, so its
  heatmaps are skipped, with a note in the report; the rest is drawn."""
  c = _tiny_config(tmp_path)
  c.stage3.model.name = "han"
  demo_lib.run(c)
  assert dict(fake_stages.calls)["stage3"].model.name == "han"
  w = str(tmp_path)
  results = json.load(open(f"{w}/results.json"))
  assert results["figures"]["heatmaps"] == {}
  assert set(results["figures"]["curves"]) == {"stage1", "stage3",
                                               "stage3_han"}
  assert len(results["figures"]["timelines"]) == c.num_timelines > 0
  md = open(f"{w}/report.md").read()
  assert "## ERM adjacency matrices" not in md
  assert "## Figures not drawn" in md
  assert ("ERM adjacency heatmaps: not drawn, the `stage3` parser"
          " (model.name=han) has no ERM adjacency matrices.") in md
  pngs = re.findall(r"\]\(([^)]+\.png)\)", md)
  assert {os.path.basename(p).split("_")[0] for p in pngs} == {"curves",
                                                               "timeline"}
  for p in pngs:
    with open(os.path.join(w, p), "rb") as f:
      assert f.read(8) == PNG_MAGIC, p


def test_demo_rejects_other_synthetic_settings(tmp_path, fake_stages):
  c = _tiny_config(tmp_path)
  demo_lib.prepare_data(c)
  c.synthetic.seed = 1
  with pytest.raises(ValueError, match="other settings"):
    demo_lib.prepare_data(c)
  c.data.llp_root = "/x"
  with pytest.raises(ValueError, match="both"):
    demo_lib.prepare_data(c)


def test_demo_config_variants():
  small = demo_config.get_config()
  assert small.stage1.model.hidden_dim == 64  # configs/stage1.py:small
  assert small.stage3_han.model.name == "han"
  assert small.stage3.model.name == "ear"
  full = demo_config.get_config("full")
  assert full.stage3.model.hidden_dim == 512
  with pytest.raises(ValueError, match="one of"):
    demo_config.get_config("tiny,full")


def test_demo_tiny_real_pipeline_then_parse(tmp_path, capsys):
  """The real stage 1 -> 2 -> 3 chain on :tiny, then parse its output."""
  # pylint: disable=g-import-not-at-top
  from ear_jax.configs import parse as parse_config
  from ear_jax.stages import parse as parse_lib
  c = _tiny_config(tmp_path)
  demo_lib.run(c)
  printed = capsys.readouterr().out
  _check_table(printed, "test")
  for name in ("stage2/eval/baselines_test.json", "stage2/eval/test.json",
               "stage3/eval/test.json", "stage3_han/eval/test.json",
               "report.md", "results.json"):
    assert os.path.exists(tmp_path / name), name
  p = parse_config.get_config("tiny")
  p.workdir = str(tmp_path / "parsed")
  p.parser_workdir = str(tmp_path / "stage3")
  p.features_root = str(tmp_path / "data" / "LLP")
  p.annotations_dir = p.features_root
  # The stage-3 run's own evaluation settings (batch size: same numerics).
  with open(tmp_path / "stage3" / "config.json") as f:
    s3 = json.load(f)
  p.batch_size, p.strict = s3["eval_batch_size"], s3["eval"]["strict"]
  p.timelines = False
  out = parse_lib.run(p)
  assert len(out["ids"]) == sum(c.synthetic.num_llp)
  assert os.path.exists(tmp_path / "parsed" / "parsed" / "index.json")
  # The LLP-format CSVs of every parsed video, scored by ear_jax.metrics on
  # the demo's test split, give exactly the demo's stage3/eval/test.json.
  from ear_jax.data import avvp
  rec = avvp.read_llp_split(p.annotations_dir, "test")
  pred = [avvp.read_llp_eval(tmp_path / "parsed" / "parsed" / f"eval_{m}.csv",
                             rec.filenames) for m in ("audio", "visual")]
  got = metrics_lib.avvp_scores(*pred, rec.gt_a, rec.gt_v)
  with open(tmp_path / "stage3" / "eval" / "test.json") as f:
    want = json.load(f)
  assert {k: got[k] for k in metrics_lib.AGGREGATE_KEYS} == {
      k: want[k] for k in metrics_lib.AGGREGATE_KEYS}
  # ear-jax's eval stage scores the same CSVs to the same numbers.
  from ear_jax.configs import eval as eval_config
  e = eval_config.get_config()
  e.workdir = str(tmp_path / "eval_csv")
  e.predictions_dir = str(tmp_path / "parsed" / "parsed")
  e.data.llp_root = p.annotations_dir
  from ear_jax.stages import evaluate as evaluate_stage
  evaluate_stage.run(e)
  with open(tmp_path / "eval_csv" / "eval" / "test.json") as f:
    scored = json.load(f)
  assert {k: scored[k] for k in metrics_lib.AGGREGATE_KEYS} == {
      k: want[k] for k in metrics_lib.AGGREGATE_KEYS}
  with pytest.raises(ValueError, match="exactly one of"):
    e.run_workdir = str(tmp_path / "stage3")
    evaluate_stage.run(e)
