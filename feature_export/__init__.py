"""Feature exporters (optional `export` extra): CLIP/CLAP via Hugging Face
torch models, VGGish/ResNet-152/R(2+1)D-18 as Flax nets; see common.run."""
