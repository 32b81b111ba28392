"""PyAV decoding: frames nearest to given times, mono float32 audio at a rate.

Times are seconds from the container's start time, so audio and video stay in
sync whatever each stream's own start offset is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np

# pylint: disable=invalid-name


class DecodeError(RuntimeError):
  """A video that cannot be used; the message says why (per-video failure)."""


class NoAudioError(DecodeError):
  pass


class NoVideoError(DecodeError):
  pass


def _av():
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "feature export decodes with PyAV: pip install 'ear-jax[export]'"
        " (or pip install av)"
    ) from e
  return av


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  path: str
  duration: float        # seconds (container; longest stream)
  origin: float          # container start time in seconds; t = 0 here
  has_video: bool
  has_audio: bool
  fps: float | None      # average frame rate, for the manifest only
  width: int | None
  height: int | None
  audio_rate: int | None


def probe(path: str) -> VideoInfo:
  """Stream layout and duration (from the container header)."""
  av = _av()
  try:
    container = av.open(path)
  except Exception as e:  # pylint: disable=broad-except
    raise DecodeError(f"cannot open: {type(e).__name__}: {e}") from e
  with container:
    v = container.streams.video[0] if container.streams.video else None
    a = container.streams.audio[0] if container.streams.audio else None
    origin = (container.start_time or 0) / 1e6
    duration = None
    if container.duration is not None and container.duration > 0:
      duration = container.duration / 1e6
    else:
      ends = [
          float(s.duration * s.time_base)
          for s in (v, a)
          if s is not None and s.duration and s.time_base
      ]
      duration = max(ends) if ends else None
    if duration is None:
      duration = _decode_duration(container, v, a, origin)
    rate = v.average_rate if v is not None else None
    return VideoInfo(
        path=path,
        duration=float(duration),
        origin=float(origin),
        has_video=v is not None,
        has_audio=a is not None,
        fps=float(rate) if rate else None,
        width=v.codec_context.width if v is not None else None,
        height=v.codec_context.height if v is not None else None,
        audio_rate=a.codec_context.sample_rate if a is not None else None,
    )


def _decode_duration(container, v, a, origin) -> float:
  """Last timestamp by decoding (containers without a duration header)."""
  stream = v if v is not None else a
  if stream is None:
    raise DecodeError("no video and no audio stream")
  end = 0.0
  for frame in container.decode(stream):
    if frame.time is None:
      continue
    if v is not None:
      step = 1.0 / float(v.average_rate) if v.average_rate else 0.0
    else:
      step = frame.samples / frame.sample_rate
    end = max(end, frame.time - origin + step)
  if end <= 0:
    raise DecodeError("no decodable frames to measure the duration")
  return end


def num_segments(duration: float, fixed: int | None, tolerance: float) -> int:
  """1-s segments: `fixed` if > 0, else ceil(duration - tolerance), >= 1.

  Container durations often overshoot a whole second by a frame or by AAC
  priming (LLP clips report 10.03 s); `tolerance` absorbs that.
  """
  if fixed:
    return int(fixed)
  return max(1, math.ceil(duration - tolerance))


def segment_times(T: int, per_segment: int) -> np.ndarray:
  """[T * per_segment] centres of equal sub-intervals of each 1-s segment."""
  k = (np.arange(per_segment) + 0.5) / per_segment
  return (np.arange(T)[:, None] + k[None, :]).reshape(-1)


def read_frames(
    info: VideoInfo,
    times_s: Sequence[float],
    convert: Callable[[Any], Any],
    stats: dict[str, float] | None = None,
) -> list[Any]:
  """convert(frame) of the frame nearest to each time (seconds from origin).

  Frames are decoded in order (any or variable frame rate) and only the
  chosen ones are converted; a time past the last frame gets the last frame.
  Ties go to the earlier frame. `stats["video_seconds"]` gets the end of
  the last frame if some time lies past it, else inf.
  """
  if not info.has_video:
    raise NoVideoError("no video stream")
  av = _av()
  times = np.asarray(times_s, np.float64)
  order = np.argsort(times, kind="stable")
  out: list[Any] = [None] * len(times)
  cache: dict[int, Any] = {}

  def pick(idx, frame):
    if idx not in cache:
      cache[idx] = convert(frame)
    return cache[idx]

  i = 0
  prev = None  # (index, time, frame)
  n = 0
  try:
    with av.open(info.path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      rate = float(stream.average_rate) if stream.average_rate else 25.0
      for n, frame in enumerate(container.decode(stream)):
        t = (frame.time - info.origin) if frame.time is not None else n / rate
        while i < len(times) and times[order[i]] <= t:
          target = times[order[i]]
          if prev is not None and target - prev[1] <= t - target:
            out[order[i]] = pick(prev[0], prev[2])
          else:
            out[order[i]] = pick(n, frame)
          i += 1
        prev = (n, t, frame)
        if i == len(times):
          break
  except av.error.FFmpegError as e:
    if prev is None:
      raise DecodeError(f"video decoding failed: {e}") from e
    # A truncated file: keep what decoded; the rest repeats the last frame.
  if prev is None:
    raise NoVideoError("the video stream has no decodable frames")
  if stats is not None:
    step = 1.0 / info.fps if info.fps else 0.0
    stats["video_seconds"] = prev[1] + step if i < len(times) else np.inf
  for j in order[i:]:
    out[j] = pick(prev[0], prev[2])
  return out


def read_audio(
    info: VideoInfo, sample_rate: int, num_seconds: float
) -> tuple[np.ndarray, float]:
  """Mono float32 [round(num_seconds * rate)], zero-padded past the end.

  Returns (wave, seconds of real audio in it). PyAV's AudioResampler
  (libswresample) changes the rate; the down-mix is the mean of the channels
  (like VGGish's and CLAP's reference loaders; swresample's own mono
  down-mix would scale stereo by sqrt(1/2) each).
  """
  if not info.has_audio:
    raise NoAudioError("no audio stream")
  av = _av()
  need = int(round(num_seconds * sample_rate))
  chunks: list[np.ndarray] = []
  got = 0
  offset = None  # first sample's time from origin, seconds
  resampler = av.AudioResampler(format="fltp", rate=sample_rate)
  try:
    with av.open(info.path) as container:
      stream = container.streams.audio[0]
      for frame in container.decode(stream):
        if offset is None:
          offset = (frame.time - info.origin) if frame.time is not None else 0.0
        for f in resampler.resample(frame):
          x = f.to_ndarray().mean(axis=0, dtype=np.float32)
          chunks.append(x)
          got += x.size
        if got >= need + int(max(0.0, offset) * sample_rate) + sample_rate:
          break
      else:
        for f in resampler.resample(None):
          chunks.append(f.to_ndarray().mean(axis=0, dtype=np.float32))
  except av.error.FFmpegError as e:
    if not chunks:
      raise DecodeError(f"audio decoding failed: {e}") from e
  wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
  if wave.size == 0:
    raise NoAudioError("the audio stream has no decodable samples")
  shift = int(round((offset or 0.0) * sample_rate))
  if shift > 0:  # audio starts after the video: silence before it
    wave = np.concatenate([np.zeros(shift, np.float32), wave])
  elif shift < 0:
    wave = wave[-shift:]
  real = min(wave.size, need)
  out = np.zeros(need, np.float32)
  out[:real] = wave[:real]
  return out, real / sample_rate
