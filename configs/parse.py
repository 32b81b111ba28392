r"""Parse videos of any length with a trained stage-3 parser: events as JSON,
LLP-format CSVs and timelines, from raw videos or from exported features.

  # One command, raw videos -> features (the set the parser was trained on,
  # weights from local paths) -> events:
  python launch.py --config=configs/parse.py --config.workdir=/runs/parsed \
      --config.parser_workdir=/runs/s3 --config.videos=/videos \
      --config.export_clip_clap.clip_model=/ckpt/clip-vit-large-patch14 \
      --config.export_clip_clap.clap_model=/ckpt/clap-htsat-fused
  #   (HAN features: --config.export_han.vggish_weights=... resnet_weights=
  #    ... r2plus1d_weights=..., exactly as configs/export_han.py takes them)
  # Features already on disk (a dataset root in the published layouts):
  python launch.py --config=configs/parse.py --config.workdir=/tmp/parsed \
      --config.parser_workdir=/runs/s3 --config.features_root=/data/LLP \
      --config.annotations_dir=/data/LLP

Videos of any length. The parser was trained on windows of `window` (10)
1-s segments; a video of T segments is parsed in windows of that length
every `stride` segments (0: half a window) and merged (ear_jax/parsing.py):
  windows: starts 0, stride, 2 stride, ... plus T - window so the end is
    covered; T <= window: one window, zero-padded, padded segments dropped.
  segment probabilities: mean over the windows covering a segment of
    sigmoid(segment logit), per modality and class.
  video-level gate: mean over the same windows of each window's video-level
    probability; a segment is predicted when probability and gate both
    exceed 0.5 (`strict`: >, else >=). One window (T = 10) is exactly the
    10-segment path; a clip repeated with stride = window repeats its events.
  events: maximal runs of predicted segments (audio-visual: audio AND
    visual); confidence = mean probability over the event x the highest
    gate in it; `video_level` = max over windows of the video probability.
    Both in [0, 1]: MMIL's attention-pooled video value reaches 2 (the
    reference clips it only in its loss), so it is reported clipped at 1.

Writes <workdir>/parsed/<id>.json (events: modality, class, onset, offset in
seconds, end exclusive, confidence; duration, num_segments, windowing),
parsed/index.json (the manifest: one row per video, status parsed | failed
with the reason; `filenames` says how the CSVs name videos),
parsed/eval_audio.csv + eval_visual.csv (every prediction in the LLP
annotation format of AVVP_eval_*.csv, scorable by the official scripts and
ear-jax's eval; videos named by LLP filename when annotations_dir, or else
features_root, holds the split CSVs, by id otherwise), timelines/<id>.png
(whole video, time in
seconds, only the classes present; ground truth beside the prediction when
`annotations_dir` has dense labels). With `videos`, features are exported to
<workdir>/features first (feature_export; a broken video is a failed row,
the batch goes on). Re-running skips videos already parsed.
Expected (benchmarks/parse_bench.py, 2 busy CPU cores, full-size EAR):
features -> events 25-50 ten-second videos/s (~50 windows/s); raw video
end to end is dominated by the exporters (HAN set, full-size nets on CPU:
~0.03 minutes of video per minute), so use a GPU for many videos.
"""

from ear_jax.configs import common
from ear_jax.configs import export_clip_clap
from ear_jax.configs import export_han


def get_config(arg=None):
  arg = common.parse_arg(arg, tiny=False)
  c = common.base(stage="parse")
  c.required = ("workdir", "parser_workdir")  # + features_root or videos
  c.parser_workdir = common.placeholder(str)  # a stage-3 workdir
  # "auto": best, or latest if val never improved (as stage 3 evaluates);
  # "best" | "latest".
  c.checkpoint = "auto"
  c.features_root = common.placeholder(str)  # features on disk, or:
  c.videos = common.placeholder(str)         # a folder of raw videos
  # "id1,id2" (file names, no path); None: every video found.
  c.ids = common.placeholder(str)
  # LLP CSV folder: if a video has dense labels there, plot GT beside it
  # and name it by its LLP filename in the CSVs.
  c.annotations_dir = common.placeholder(str)
  c.strict = True          # `>` at 0.5 (UWAV); False: `>=` (HAN-code)
  c.min_confidence = 0.0   # drop events below this confidence
  c.timelines = True       # write timelines/<id>.png
  c.window = 10            # segments per window (the parser's training T)
  c.stride = 0             # segments between windows; 0: window // 2
  c.batch_size = 64        # windows per jitted step (all local devices)
  c.videos_per_step = 256  # videos loaded and merged at a time (memory)
  # Raw videos (`videos`): the exporter(s) of the parser's feature set, as
  # configs/export_clip_clap.py and configs/export_han.py define them (set
  # their weights here: --config.export_clip_clap.clip_model=PATH, ...);
  # videos_dir, output_root (<workdir>/features) and workdir are filled in.
  variant = "tiny" if arg.tiny else None  # :tiny: tiny random test nets
  for name, module in (("clip_clap", export_clip_clap), ("han", export_han)):
    e = module.get_config(variant)
    e.num_segments = 0       # any length: ceil(duration - tolerance) rows
    e.max_pad_seconds = 1.0
    e.classes = "llp"
    e.required = ()          # checked when the parser needs this exporter
    if not arg.tiny:
      e.num_workers = 4
    c[f"export_{name}"] = e
  if arg.tiny:
    c.batch_size = 8
  return c
