"""The import graph of ear_jax/ (parsed with ast, nothing imported).

Stage runners build on the library and never import each other (launch.py
and the demo find runners through ear_jax.stages.RUNNERS), and no module
inside ear_jax/ takes part in an import cycle.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ear_jax"


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path, modules) -> set[str]:
  """ear_jax modules imported by `path` (`from pkg import mod` -> pkg.mod)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name in modules)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for a in node.names:
        sub = f"{node.module}.{a.name}"
        if sub in modules:
          out.add(sub)
        elif node.module in modules:
          out.add(node.module)
  return out


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def _cycle(graph) -> list[str] | None:
  """One import cycle of `graph`, or None (depth-first search)."""
  state = {}
  stack = []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == "open":
        return stack[stack.index(n):] + [n]
      if n not in state:
        found = visit(n)
        if found:
          return found
    stack.pop()
    state[m] = "done"
    return None

  for m in sorted(graph):
    if m not in state:
      found = visit(m)
      if found:
        return found
  return None


def test_the_graph_sees_the_library_edges():
  graph = _graph()
  assert "ear_jax.parser_lib" in graph["ear_jax.stages.train_parser"]
  assert "ear_jax.generator_lib" in graph["ear_jax.stages.pretrain_generator"]
  assert "ear_jax.data.avvp" in graph["ear_jax.generator_lib"]
  assert "ear_jax.stages" in graph["ear_jax.stages.demo"]  # the registry


def test_stage_runners_never_import_each_other():
  graph = _graph()
  runners = {m for m in graph if m.startswith("ear_jax.stages.")}
  assert "ear_jax.stages.train_parser" in runners and len(runners) >= 6
  edges = sorted((m, n) for m in runners for n in graph[m] if n in runners)
  assert not edges, f"stage runners import each other: {edges}"
  # The registry names runners as strings only.
  assert not graph["ear_jax.stages"]


def test_no_import_cycle_inside_ear_jax():
  assert _cycle(_graph()) is None


def test_the_cycle_finder_finds_cycles():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("name", ["data", "metrics.py", "jsonio.py",
                                  "stats.py"])
def test_numpy_only_modules_import_no_jax(name):
  """data/, metrics.py, jsonio.py and stats.py stay numpy-only (no jax, no
  flax)."""
  paths = ([PACKAGE / name] if name.endswith(".py")
           else sorted((PACKAGE / name).rglob("*.py")))
  graph = _graph()
  for path in paths:
    tree = ast.parse(path.read_text())
    top = {a.name.split(".")[0] for n in ast.walk(tree)
           if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert not top & {"jax", "flax", "optax", "orbax"}, path
    for dep in graph[_module_name(path)]:
      assert dep.startswith("ear_jax.data") or dep in (
          "ear_jax.jsonio", "ear_jax.stats"), (path, dep)
