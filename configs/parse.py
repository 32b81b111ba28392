r"""Parse new videos with a trained stage-3 parser: events as JSON + timelines.

  python launch.py --config=configs/parse.py --config.workdir=/tmp/parsed \
      --config.parser_workdir=/runs/s3 --config.features_root=/data/LLP
  python launch.py --config=configs/parse.py --config.workdir=/tmp/parsed \
      --config.parser_workdir=/tmp/demo/stage3 \
      --config.features_root=/tmp/demo/data/LLP \
      --config.annotations_dir=/tmp/demo/data/LLP --config.ids=vid00000001

`features_root` is a dataset root in the published layouts (an LLP root or
the feature exporter's output) holding the feature set the parser was
trained on. Writes <workdir>/parsed/<id>.json (events: modality, class,
onset, offset in seconds, end exclusive, confidence), parsed/index.json and
timelines/<id>.png (with ground truth beside the prediction when
`annotations_dir` has dense labels for the video).
Expected: a few seconds per thousand videos on CPU, plus ~0.2 s per PNG.
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, tiny=False)
  c = common.base(stage="parse")
  c.required = ("workdir", "parser_workdir", "features_root")
  c.parser_workdir = common.placeholder(str)  # a stage-3 workdir
  # "auto": best, or latest if val never improved (as stage 3 evaluates);
  # "best" | "latest".
  c.checkpoint = "auto"
  c.features_root = common.placeholder(str)
  c.ids = common.placeholder(str)  # "id1,id2"; None: every id with features
  # LLP CSV folder: if a video has dense labels there, plot GT beside it.
  c.annotations_dir = common.placeholder(str)
  c.strict = True          # `>` at 0.5 (UWAV); False: `>=` (HAN-code)
  c.min_confidence = 0.0   # drop events below this confidence
  c.timelines = True       # write timelines/<id>.png
  c.batch_size = 64
  if arg.tiny:
    c.batch_size = 8
  return c
