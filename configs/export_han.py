r"""Export HAN-layout features: VGGish, ResNet-152 and R(2+1)D-18 (JAX nets).

  python launch.py --config=configs/export_han.py --config.workdir=/runs/x \
      --config.videos_dir=/data/LLP/video --config.output_root=/data/LLP \
      --config.vggish_weights=/ckpt/vggish-10086976.pth \
      --config.resnet_weights=/ckpt/resnet152-394f9c45.pth \
      --config.r2plus1d_weights=/ckpt/r2plus1d_18-91a641e6.pth
  python launch.py --config=configs/export_han.py:tiny ...  # random tiny nets

Writes <output_root>/feats/{vggish,res152,r2plus1d_18}/<id>.npy with (10,128),
(80,2048), (10,512) f32 rows and export_manifest_han.json. The PyTorch
weights are converted at start-up (.pth needs torch; .safetensors/.npz with
the torch tensor names do not); the nets run on the default JAX backend.
Expected: not measured on real data yet (see benchmarks/export_bench.py).
"""

from ear_jax.configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, tiny=False)
  c = common.base(stage="export_features")
  c.exporter = "han"
  c.features = ("vggish", "res152", "r2plus1d_18")
  c.videos_dir = common.placeholder(str)
  c.output_root = common.placeholder(str)
  c.required = ("workdir", "videos_dir", "output_root")
  # Checked at start-up (not `required`: random_init_for_testing skips them).
  c.vggish_weights = common.placeholder(str)
  c.vggish_pca_params = common.placeholder(str)  # only for the PCA options
  c.resnet_weights = common.placeholder(str)
  c.r2plus1d_weights = common.placeholder(str)
  c.random_init_for_testing = False  # random nets; recorded in the manifest
  # "none": raw 128-d embeddings (HAN's script); "pca": AudioSet PCA +
  # whitening; "pca_quantized": also clipped to [-2, 2] and 8-bit (0..255).
  c.vggish_postprocess = "none"
  c.vggish_hop_seconds = 1.0  # example t starts at t s (VGGish's own: 0.96)
  c.frames_per_segment = 8    # ResNet frames per 1-s segment (layout: 8)
  c.r2plus1d_frames = 8       # frames per R(2+1)D clip (8 or 16)
  c.resnet_resize, c.resnet_crop = 256, 224
  c.r2plus1d_resize, c.r2plus1d_crop = (128, 171), 112
  c.nets = dict(
      resnet_layers=(3, 8, 36, 3), resnet_width=64,
      r2plus1d_layers=(2, 2, 2, 2), r2plus1d_width=64, r2plus1d_stem_mid=45,
      vggish_widths=(64, 128, 256, 256, 512, 512), vggish_fc_dim=4096,
  )
  c.batch_sizes = dict(vggish=256, res152=128, r2plus1d_18=32)
  c.num_segments = 10  # LLP layout; 0: ceil(duration - tolerance) rows
  c.duration_tolerance = 0.05
  c.max_pad_seconds = 1.0
  # Decode and encode at most this many 1-s segments at a time: memory stays
  # bounded on long videos (0: the whole video at once).
  c.chunk_segments = 60
  c.id_length = 0
  c.video_extensions = ".mp4,.mkv,.webm,.avi,.mov,.m4v,.flv,.mpg,.mpeg,.3gp"
  c.limit = 0
  c.num_workers = 8
  if arg.tiny:
    # Full output widths (the layouts fix them), minimal depth and pixels.
    c.random_init_for_testing = True
    c.nets.update(resnet_layers=(1, 1, 1, 1), r2plus1d_layers=(1, 1, 1, 1),
                  r2plus1d_stem_mid=8, vggish_widths=(8, 8, 16, 16, 16, 16),
                  vggish_fc_dim=32)
    c.resnet_resize, c.resnet_crop = 20, 16
    c.r2plus1d_resize, c.r2plus1d_crop = (20, 28), 16
    c.batch_sizes = dict(vggish=16, res152=32, r2plus1d_18=4)
    c.num_workers = 2
  return c
