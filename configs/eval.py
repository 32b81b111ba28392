r"""Evaluate a finished stage-3 (parser) or stage-2 (pseudo-label) run on LLP.

  python launch.py --config=configs/eval.py --config.workdir=/runs/s3_test \
      --config.run_workdir=/runs/s3 --config.split=test
  python launch.py --config=configs/eval.py --config.workdir=/tmp/e \
      --config.run_workdir=/runs/s2 --config.split=val   # binary labels

Stage-3 runs: the parser is rebuilt from <run_workdir>/config.json, its
`checkpoint` ("auto": best/, or the latest when there is none | "best" |
"latest") restored and scored. Stage-2 runs: the saved binary pseudo-labels
are scored. Or any method's predictions in the LLP annotation format:

  python launch.py --config=configs/eval.py --config.workdir=/tmp/e \
      --config.predictions_dir=/runs/parsed/parsed \
      --config.data.llp_root=/data/LLP   # eval_{audio,visual}.csv there

CSVs are matched to the split by LLP filename (<id>_<start>_<end>):
predictions naming none of its videos are refused; part of them is scored
with `coverage` and a `partial` note in the JSON.

Writes <workdir>/eval/<split>.json (the ten aggregates + avg; for a run the
numbers equal its own eval/<split>.json), and beside it
<split>_per_class.json (F1 per class, modality and level, counts pooled over
the split) and <split>_per_video.csv (each video's eight per-video F values,
by LLP filename). Expected: seconds.
"""

from ear_jax.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, tiny=False)
  c = common.base(stage="evaluate")
  c.required = ("workdir",)  # + run_workdir or predictions_dir
  c.run_workdir = common.placeholder(str)  # a stage-3 or stage-2 workdir
  # Or predictions in the LLP annotation format: a folder with
  # eval_audio.csv and eval_visual.csv (e.g. <parse workdir>/parsed),
  # scored against data.llp_root's split (its filenames).
  c.predictions_dir = common.placeholder(str)
  c.split = "test"                         # "val" | "test" (dense GT)
  c.checkpoint = "auto"                    # stage-3: "auto" | "best" | "latest"
  # None: from the run's config.json (data.llp_root, eval.strict, ...).
  c.strict = common.placeholder(bool)      # None: the run's eval.strict
  c.eval_batch_size = common.placeholder(int)  # None: the run's
  if arg.tiny:
    c.eval_batch_size = 16
  return c
