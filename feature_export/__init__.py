"""Feature exporters (optional `export` extra): CLIP/CLAP via Hugging Face
torch models, VGGish/ResNet-152/R(2+1)D-18 as Flax nets.

common.py (the `Exporter` interface and shared helpers) <- clip_clap.py,
han.py <- registry.py (EXPORTERS) <- driver.py (`run`, the stage).
"""
