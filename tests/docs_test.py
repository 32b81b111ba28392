"""The repository stands alone: every `Eq. (n)` mark points into
docs/METHOD.md, and nothing points at folders users do not get."""

import os
import re

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD = os.path.join(REPO, "docs", "METHOD.md")
_SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", "testdata", ".venv",
              "venv", "build", "dist"}
_TEXT = (".py", ".md", ".toml", ".cff", ".txt", ".cfg", ".sh", ".yaml",
         ".yml", ".json")
# Equation labels: (12), (S-21), (P1), (M4), (B); ranges such as (13)-(14).
_LABEL = r"(?:S-\d+|[A-Z]\d*|\d+)"
_MARK = re.compile(rf"Eqs?\.\s*\(({_LABEL})\)(?:\s*[-–]\s*\(({_LABEL})\))?")


def _files():
  for root, dirs, files in os.walk(REPO):
    dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS
                     and not d.endswith(".egg-info"))
    for name in sorted(files):
      if name.endswith(_TEXT) or os.path.basename(root) == ".ci":
        yield os.path.join(root, name)


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def _method_labels():
  """Labels written at the end of a display line of METHOD.md: `...  (n)`."""
  return set(re.findall(rf"\s\(({_LABEL})\)\s*$", _read(METHOD), re.M))


def test_method_numbers_its_equations():
  labels = _method_labels()
  for n in list(range(1, 17)) + ["S-19", "S-20", "S-21", "S-22", "S-23",
                                 "S-24", "S-25", "S-26", "S-27", "B", "P1",
                                 "P2", "M1", "M2", "M3", "M4"]:
    assert str(n) in labels, f"docs/METHOD.md defines no equation ({n})"


def test_every_equation_mark_points_into_method():
  labels = _method_labels()
  marks = {}
  for path in _files():
    if path == METHOD or not path.endswith(".py"):
      continue
    for lineno, line in enumerate(_read(path).splitlines(), 1):
      for m in _MARK.finditer(line):
        for label in filter(None, m.groups()):
          marks.setdefault(label, []).append(
              f"{os.path.relpath(path, REPO)}:{lineno}")
  assert marks, "no Eq. marks found"
  unknown = {k: v for k, v in marks.items() if k not in labels}
  assert not unknown, f"marks with no equation in docs/METHOD.md: {unknown}"


def test_one_mark_form():
  # `Eq. (n)` only: not "Eqs.", "(Eq. n)", "eq. n", "Eq. n".
  bad = re.compile(r"\bEqs\.|\(Eq\. \d|\beq\.? ?\(?\d|\bEq\. \d")
  found = []
  for path in _files():
    if not path.endswith(".py") or os.path.samefile(path, __file__):
      continue
    for lineno, line in enumerate(_read(path).splitlines(), 1):
      if bad.search(line):
        found.append(f"{os.path.relpath(path, REPO)}:{lineno}: "
                     f"{line.strip()}")
  assert not found, "\n".join(found)


@pytest.mark.parametrize("needle", [
    "STAGE1_2" + "_GENERATOR", "STAGE3" + "_PARSER", "STAGE1" + " §",
    "STAGE3" + " §", "\u00a7"])
def test_nothing_points_outside_the_repository(needle):
  hits = []
  for path in _files():
    if os.path.samefile(path, __file__):
      continue
    for lineno, line in enumerate(_read(path).splitlines(), 1):
      if needle in line:
        hits.append(f"{os.path.relpath(path, REPO)}:{lineno}")
  assert not hits, f"{needle!r} in {hits}"


# Absolute paths in the docs and code are examples a user replaces (/data,
# /runs, ...): a folder of the machine a file was written on is not one.
_EXAMPLE_ROOTS = {"data", "runs", "tmp", "ckpt", "models", "videos", "moved",
                  "path", "r", "dev", "proc", "etc", "usr"}
_ABSOLUTE = re.compile(r"(?:^|[\s`'\"=(\[,])/([A-Za-z_][\w.-]*)(?=/)")
_UPWARD = re.compile(r"(?<![.\w])\.\./([\w.-]+)")


def test_no_absolute_or_upward_paths_of_one_machine():
  top = set(os.listdir(REPO))
  hits = []
  for path in _files():
    if os.path.samefile(path, __file__):  # its own examples below
      continue
    # ids like "../x" on purpose: the path-traversal tests of parse/eval.
    if os.path.basename(path) == "hostile_inputs_test.py":
      continue
    for lineno, line in enumerate(_read(path).splitlines(), 1):
      where = f"{os.path.relpath(path, REPO)}:{lineno}"
      hits += [f"{where}: /{m}/" for m in _ABSOLUTE.findall(line)
               if m not in _EXAMPLE_ROOTS]
      hits += [f"{where}: ../{m}" for m in _UPWARD.findall(line)
               if m not in top]
  assert not hits, "paths of one machine, not of the repository:\n" + (
      "\n".join(hits))


def test_the_path_check_finds_them():
  line = "see /home/me/x.py, `/work/a/b` and ../elsewhere/spec.md; /data/LLP"
  assert [m for m in _ABSOLUTE.findall(line)
          if m not in _EXAMPLE_ROOTS] == ["home", "work"]
  assert _UPWARD.findall(line) == ["elsewhere"]


def test_license_and_citation():
  text = _read(os.path.join(REPO, "LICENSE"))
  assert "Apache License" in text and "Version 2.0, January 2004" in text
  assert "END OF TERMS AND CONDITIONS" in text
  cff = yaml.safe_load(_read(os.path.join(REPO, "CITATION.cff")))
  assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
  assert cff["preferred-citation"]["title"].startswith("EAR:")
  titles = " ".join(r["title"] for r in cff["references"])
  for work in ("UWAV", "Unified Multisensory Perception",
               "Modality-Independent Teachers"):
    assert work in titles
