r"""Runs one ear-jax stage from a config file (the same as `ear-jax`).

  python launch.py --config=configs/stage1.py --config.workdir=/runs/s1 \
      --config.data.unav_root=/data/UnAV
  python launch.py --config=configs/demo.py --config.workdir=/tmp/demo

Re-running the same command resumes the run in its workdir. The command
itself is ear_jax/cli.py.
"""

from ear_jax import cli

if __name__ == "__main__":
  cli.run()
