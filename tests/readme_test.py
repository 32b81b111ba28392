"""The README as a newcomer reads it: at most 300 lines, its sections, and
every code block marked `<!-- runnable -->` runs (on a tiny untrained
parser and generated inputs that this test makes; the README's example
paths are swapped for them)."""

import os
import re

import numpy as np
import pytest

# pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
_RUNNABLE = re.compile(r"<!-- runnable -->\n```python\n(.*?)```", re.S)


def _readme():
  with open(README, encoding="utf-8") as f:
    return f.read()


def runnable_blocks(text):
  return _RUNNABLE.findall(text)


def test_fits_on_a_screen_or_two():
  text = _readme()
  assert len(text.splitlines()) <= 300
  for section in ("## Install", "## Quick start", "## Data",
                  "## One command per stage", "## Reproduce UWAV and EAR",
                  "## Seeds and paired comparisons", "## Parse your own videos",
                  "## Python API", "## Citing"):
    assert f"\n{section}\n" in text, section
  assert "docs/METHOD.md" in text and "R1–R15" in text
  assert "```bibtex" in text
  # Performance logs live in docs/PERFORMANCE.md, dated and neutral.
  for word in ("session", "sitting", " lent", "today"):
    assert word not in text.lower(), word
  with open(os.path.join(REPO, "docs", "PERFORMANCE.md"),
            encoding="utf-8") as f:
    perf = f.read().lower()
  for word in ("session", "sitting", " lent", "today"):
    assert word not in perf, word


def test_runnable_blocks_are_found():
  blocks = runnable_blocks(_readme())
  assert len(blocks) == 2
  assert "parse_features" in blocks[0] and "parse_video" in blocks[1]
  text = "x\n<!-- runnable -->\n```python\nprint(1)\n```\n```python\n2\n```"
  assert runnable_blocks(text) == ["print(1)\n"]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
  """{README example path: a file or workdir this test made}."""
  pytest.importorskip("av")
  pytest.importorskip("transformers")
  import export_fixtures
  import parse_test
  root = tmp_path_factory.mktemp("readme")
  han = parse_test.make_stage3_workdir(root / "s3", root / "unused")
  clip_clap = han.copy_and_resolve_references()
  clip_clap.workdir = str(root / "s3_clip_clap")
  clip_clap.data.features = "clip_clap"
  parse_test.save_untrained_parser(clip_clap)
  clip_dir, clap_dir = export_fixtures.write_tiny_hf_models(root / "hf")
  video = root / "clip.mp4"
  export_fixtures.write_clip(video, 3.0, 4, size=(64, 48))
  return {
      "/runs/s3_clip_clap": str(root / "s3_clip_clap"),
      "/runs/s3": str(root / "s3"),
      "/models/clip-vit-large-patch14": str(clip_dir),
      "/models/clap-htsat-fused": str(clap_dir),
      "/videos/clip.mp4": str(video),
  }


def _run(block, examples, capsys):
  for example in sorted(examples, key=len, reverse=True):
    block = block.replace(f'"{example}"', repr(examples[example]))
  left = re.findall(r'"(/(?:runs|models|videos|data)/[^"]*)"', block)
  assert not left, f"README paths this test does not provide: {left}"
  namespace = {"__name__": "readme"}
  # pylint: disable-next=exec-used
  exec(compile(block, "README.md", "exec"), namespace)
  return namespace, capsys.readouterr().out


def test_features_block_runs(examples, capsys):
  ns, out = _run(runnable_blocks(_readme())[0], examples, capsys)
  events = ns["events"]
  assert isinstance(events, list)
  for e in events:
    assert set(e) == {"modality", "class", "onset", "offset", "confidence"}
    assert 0 <= e["onset"] < e["offset"] <= 25
  assert [p.video_id for p in ns["parsed"]] == ["clip_a", "clip_b"]
  assert ns["parsed"][1].merged.num_segments == 7
  assert "['clip_a', 'clip_b'] 7" in out
  # parse_many gives the single-video call's events for the same input.
  assert ns["parsed"][0].events == events


def test_video_block_runs(examples, capsys):
  ns, out = _run(runnable_blocks(_readme())[1], examples, capsys)
  parsed = ns["parsed"]
  assert parsed.video_id == "clip" and parsed.merged.num_segments == 3
  assert np.all((parsed.merged.prob_a >= 0) & (parsed.merged.prob_a <= 1))
  assert out.startswith("clip 3 ")
