"""ear-jax: EAR weakly supervised audio-visual video parsing in JAX/Flax."""

from ear_jax import cpu_prng as _cpu_prng

__version__ = "0.1.0"

_cpu_prng.install()
