"""Flax NNX encoders for the HAN feature layout, with torch-name converters."""
