r"""Export CLIP (visual) and CLAP (audio) segment + class-text features.

  python launch.py --config=configs/export_clip_clap.py --config.workdir=/r/x \
      --config.videos_dir=/data/LLP/video --config.output_root=/data/LLP \
      --config.clip_model=/ckpt/clip-vit-large-patch14 \
      --config.clap_model=/ckpt/clap-htsat-fused
  ... configs/export_clip_clap.py:dataset=unav ...   # UnAV: ceil(duration) rows
  ... configs/export_clip_clap.py:only=clip ...      # one model (only its path)

Writes <output_root>/feats_{CLIP,CLAP}/segment_feats/<id>.npy, (T,768)/(T,512)
f32 L2-normalised, event_feats/all_event_feats.npy (C,D), and
export_manifest_clip_clap.json. Re-running skips finished ids. Model dirs are
local Hugging Face snapshots (nothing is downloaded). LLP videos named
<id>_<start>_<end>.mp4 need --config.id_length=11.
Expected: not measured on real data yet (see benchmarks/export_bench.py).
"""

from ear_jax.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, tiny=False, dataset="llp", only="")
  if arg.dataset not in ("llp", "unav"):
    raise ValueError(f"dataset={arg.dataset!r}; expected 'llp' or 'unav'")
  c = common.base(stage="export_features")
  c.exporter = "clip_clap"
  c.features = (arg.only,) if arg.only else ("clip", "clap")
  c.videos_dir = common.placeholder(str)
  c.output_root = common.placeholder(str)  # dataset root (feature layouts)
  c.clip_model = common.placeholder(str)   # local HF dir, CLIP ViT-L/14
  c.clap_model = common.placeholder(str)   # local HF dir, LAION CLAP fused
  c.required = ("workdir", "videos_dir", "output_root") + tuple(
      f"{f}_model" for f in c.features)
  # "llp" (names '_'->' ', lower case) | "unav" (as written) | a text file.
  c.classes = arg.dataset
  c.clip_template = "A photo of {}"             # R10 in docs/METHOD.md
  c.clap_template = "This is the sound of {}"
  # Segments per clip: LLP's loader needs exactly 10; 0 = ceil(duration -
  # duration_tolerance), which the UnAV loader pools to its T_v.
  c.num_segments = 10 if arg.dataset == "llp" else 0
  c.duration_tolerance = 0.05  # s; container durations overshoot (10.03 s)
  c.max_pad_seconds = 1.0      # more padding needed -> per-video failure
  # Decode and encode at most this many 1-s segments at a time: memory stays
  # bounded on long videos (0: the whole video at once).
  c.chunk_segments = 60
  c.id_length = 0              # 0: id = file stem; 11: LLP's YouTube id
  c.video_extensions = ".mp4,.mkv,.webm,.avi,.mov,.m4v,.flv,.mpg,.mpeg,.3gp"
  c.limit = 0                  # > 0: only the first N videos (smoke runs)
  c.num_workers = 8            # decoding threads (0: decode inline)
  c.device = "auto"            # torch device: "auto" | "cuda" | "cpu"
  c.torch_dtype = "float32"    # "float16"/"bfloat16" for speed on GPU
  c.clip_batch_size = 128      # frames per forward
  c.clap_batch_size = 64       # 1-s chunks per forward
  c.random_init_for_testing = False  # recorded in the manifest
  if arg.tiny:
    c.num_workers, c.clip_batch_size, c.clap_batch_size = 2, 4, 4
  return c
