"""PyAV decoding: frames nearest to given times, mono float32 audio at a rate.

Times are seconds from the container's start time, so audio and video stay in
sync whatever each stream's own start offset is.
"""

from __future__ import annotations

import dataclasses
import math
import os
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
  # Why a stream that exists cannot be decoded (no decoder for its codec).
  video_error: str | None = None
  audio_error: str | None = None


def probe(path: str) -> VideoInfo:
  """Stream layout and duration (from the container header)."""
  av = _av()
  try:
    size = os.path.getsize(path)
  except OSError as e:
    raise DecodeError(f"cannot read the file: {e}") from e
  if size == 0:
    raise DecodeError("the file is empty (0 bytes)")
  try:
    container = av.open(path)
  except Exception as e:  # pylint: disable=broad-except
    raise DecodeError(f"cannot open: {type(e).__name__}: {e}") from e
  with container:
    v = container.streams.video[0] if container.streams.video else None
    a = container.streams.audio[0] if container.streams.audio else None
    errors = {}
    for kind, st in (("video", v), ("audio", a)):
      if st is not None and st.codec_context is None:
        errors[kind] = (f"no decoder for the {kind} stream's codec in this"
                        f" FFmpeg build (PyAV {av.__version__}); re-encode"
                        " the file, e.g. to H.264/AAC")
    if len(errors) == sum(st is not None for st in (v, a)):
      raise DecodeError("; ".join(errors.values()) or
                        "no video and no audio stream")
    v_ok = v if "video" not in errors else None
    a_ok = a if "audio" not in errors else None
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
      duration = _decode_duration(container, v_ok, a_ok, origin)
    rate = v.average_rate if v is not None else None
    return VideoInfo(
        path=path,
        duration=float(duration),
        origin=float(origin),
        has_video=v is not None,
        has_audio=a is not None,
        fps=float(rate) if rate else None,
        width=v_ok.codec_context.width if v_ok is not None else None,
        height=v_ok.codec_context.height if v_ok is not None else None,
        audio_rate=(a_ok.codec_context.sample_rate if a_ok is not None
                    else None),
        video_error=errors.get("video"),
        audio_error=errors.get("audio"),
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


class _StreamReader:
  """Context manager over an opened PyAV container (`self._container`)."""

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self) -> None:
    self._container.close()


class FrameReader(_StreamReader):
  """Frames nearest to non-decreasing times, in one forward decoding pass.

  `take(times, convert)` may be called again with later times (a long video
  in chunks): the decoder stays where it stopped, so memory holds two
  decoded frames, not the video. Nearest frame, ties to the earlier one; a
  time past the last frame gets the last frame. A truncated file keeps what
  decoded (the rest repeats the last frame).
  """

  def __init__(self, info: VideoInfo):
    if not info.has_video:
      raise NoVideoError("no video stream")
    if info.video_error:
      raise DecodeError(info.video_error)
    self._av = av = _av()
    self.info = info
    try:
      self._container = av.open(info.path)
    except Exception as e:  # pylint: disable=broad-except
      raise DecodeError(f"cannot open: {type(e).__name__}: {e}") from e
    stream = self._container.streams.video[0]
    stream.thread_type = "AUTO"
    self._rate = float(stream.average_rate) if stream.average_rate else 25.0
    self._frames = self._container.decode(stream)
    self._n = -1
    self._prev = self._cur = None  # (index, time, frame)
    self._cache: dict[int, Any] = {}
    self._exhausted = False
    self.past_end = False  # some time lay past the last frame

  def _advance(self) -> None:
    try:
      frame = next(self._frames)
    except StopIteration:
      self._exhausted = True
      return
    except self._av.error.FFmpegError as e:
      if self._cur is None:
        raise DecodeError(f"video decoding failed: {e}") from e
      self._exhausted = True  # truncated: keep what decoded
      return
    self._n += 1
    n = self._n
    t = (frame.time - self.info.origin) if frame.time is not None else (
        n / self._rate)
    self._prev, self._cur = self._cur, (n, t, frame)
    keep = {n} | ({self._prev[0]} if self._prev else set())
    for k in [k for k in self._cache if k not in keep]:
      del self._cache[k]

  def _pick(self, item, convert):
    if item[0] not in self._cache:
      self._cache[item[0]] = convert(item[2])
    return self._cache[item[0]]

  def take(self, times_s: Sequence[float], convert: Callable[[Any], Any]
           ) -> list[Any]:
    """convert(frame) of the frame nearest to each time (seconds from the
    container's origin); times must not precede an earlier call's."""
    times = np.asarray(times_s, np.float64)
    out: list[Any] = [None] * len(times)
    for j in np.argsort(times, kind="stable"):
      target = times[j]
      while not self._exhausted and (self._cur is None
                                     or self._cur[1] < target):
        self._advance()
      if self._cur is None:
        raise NoVideoError("the video stream has no decodable frames")
      prev, cur = self._prev, self._cur
      if cur[1] >= target:
        near_prev = prev is not None and target - prev[1] <= cur[1] - target
        out[j] = self._pick(prev if near_prev else cur, convert)
      else:
        self.past_end = True
        out[j] = self._pick(cur, convert)
    return out

  @property
  def video_seconds(self) -> float:
    """End of the last frame if some time lay past it, else inf."""
    if not self.past_end:
      return np.inf
    step = 1.0 / self.info.fps if self.info.fps else 0.0
    return self._cur[1] + step


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
  the last frame if some time lies past it, else inf. (One FrameReader.)
  """
  with FrameReader(info) as reader:
    out = reader.take(times_s, convert)
    if stats is not None:
      stats["video_seconds"] = reader.video_seconds
  return out


class AudioReader(_StreamReader):
  """Mono float32 samples at `sample_rate`, read forward in pieces.

  `read(start, stop)` returns samples [start, stop) of the stream, with
  t = 0 at the container's origin (silence before a late audio start),
  zeros past the end of the audio and at or past `limit`; starts must not
  decrease (samples before the latest start are dropped: bounded memory).
  PyAV's AudioResampler (libswresample) changes the rate; the down-mix is
  the mean of the channels (like VGGish's and CLAP's reference loaders;
  swresample's own mono down-mix would scale stereo by sqrt(1/2) each).
  """

  def __init__(self, info: VideoInfo, sample_rate: int, limit: int):
    if not info.has_audio:
      raise NoAudioError("no audio stream")
    if info.audio_error:
      raise DecodeError(info.audio_error)
    self._av = av = _av()
    self.info, self.rate, self.limit = info, sample_rate, int(limit)
    try:
      self._container = av.open(info.path)
    except Exception as e:  # pylint: disable=broad-except
      raise DecodeError(f"cannot open: {type(e).__name__}: {e}") from e
    self._frames = self._container.decode(self._container.streams.audio[0])
    self._resampler = av.AudioResampler(format="fltp", rate=sample_rate)
    self._buf: list[np.ndarray] = []
    self._base = 0        # stream index of the first buffered sample
    self._end = 0         # stream index one past the last buffered sample
    self._drop = None     # samples still to drop (audio starts early)
    self._decoded = 0
    self._exhausted = False

  def _push(self, x: np.ndarray) -> None:
    if self._drop:
      k = min(self._drop, x.size)
      x, self._drop = x[k:], self._drop - k
    if x.size:
      self._buf.append(x)
      self._end += x.size

  def _decode_more(self) -> None:
    try:
      frame = next(self._frames)
    except StopIteration:
      for f in self._resampler.resample(None):
        self._push(f.to_ndarray().mean(axis=0, dtype=np.float32))
      self._exhausted = True
      return
    except self._av.error.FFmpegError as e:
      if not self._decoded:
        raise DecodeError(f"audio decoding failed: {e}") from e
      self._exhausted = True  # truncated: keep what decoded
      return
    if self._drop is None:
      offset = ((frame.time - self.info.origin) if frame.time is not None
                else 0.0)
      shift = int(round(offset * self.rate))
      self._drop = max(0, -shift)
      if shift > 0:  # audio starts after the video: silence before it
        self._buf.append(np.zeros(shift, np.float32))
        self._end += shift
    for f in self._resampler.resample(frame):
      x = f.to_ndarray().mean(axis=0, dtype=np.float32)
      self._decoded += x.size
      self._push(x)

  def read(self, start: int, stop: int) -> np.ndarray:
    """float32 [stop - start]; zeros past the audio or at/past `limit`."""
    if start < self._base:
      raise ValueError(f"read({start}, ...) before sample {self._base}: "
                       "reads must move forward")
    want = min(stop, self.limit)
    while self._end < want and not self._exhausted:
      self._decode_more()
    if self._exhausted and not self._decoded:
      raise NoAudioError("the audio stream has no decodable samples")
    buf = np.concatenate(self._buf) if len(self._buf) > 1 else (
        self._buf[0] if self._buf else np.zeros(0, np.float32))
    out = np.zeros(stop - start, np.float32)
    hi = min(want, self._end)
    if hi > start:
      out[:hi - start] = buf[start - self._base:hi - self._base]
    # Keep only what a later read (start >= this start) can need.
    cut = min(start, self._end)
    self._buf = [buf[cut - self._base:]] if cut < self._end else []
    self._base = cut
    return out

  @property
  def real_samples(self) -> int:
    """Samples of real audio (and leading silence) below `limit` so far."""
    return min(self._end, self.limit)


def read_audio(
    info: VideoInfo, sample_rate: int, num_seconds: float
) -> tuple[np.ndarray, float]:
  """Mono float32 [round(num_seconds * rate)], zero-padded past the end.

  Returns (wave, seconds of real audio in it); see AudioReader.
  """
  need = int(round(num_seconds * sample_rate))
  with AudioReader(info, sample_rate, need) as reader:
    wave = reader.read(0, need)
    return wave, reader.real_samples / sample_rate
