"""The package's shape (docs/design.md): no import circle, small modules, one concept each."""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parent.parent / "optax_ldl" / "_src"
MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(SRC.parent.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> set[str]:
  """The ``optax_ldl._src`` modules ``path`` imports at module level or in functions."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optax_ldl._src"):
      assert node.module is not None
      for alias in node.names:
        child = f"{node.module}.{alias.name}"
        found.add(child if child in NAMES else node.module)
    elif isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith("optax_ldl._src")}
  return {m for m in found if m in NAMES}


NAMES = {module_name(p): p for p in MODULES}


def test_no_import_circle():
  graph = {name: imports(path) - {name} for name, path in NAMES.items()}
  # a package's __init__ re-exports its modules: an edge into a package is an edge into them.
  for name in graph:
    graph[name] = {m for m in graph[name] if not (m in graph and m.startswith(name + "."))}
  seen: dict[str, int] = {}  # 1: on the stack, 2: done

  def visit(node: str, stack: list[str]) -> None:
    seen[node] = 1
    for nxt in sorted(graph[node]):
      if seen.get(nxt) == 1:
        cycle = stack[stack.index(nxt):] + [nxt]
        raise AssertionError(f"import circle: {' -> '.join(cycle)}")
      if nxt not in seen:
        visit(nxt, [*stack, nxt])
    seen[node] = 2

  for node in sorted(graph):
    if node not in seen:
      visit(node, [node])


def test_the_core_does_not_import_the_paddle_layer():
  paddle = "optax_ldl._src.paddle"
  users = sorted(name for name, path in NAMES.items() if paddle in imports(path))
  assert users == [], users


def test_no_module_over_400_lines():
  sizes = {name: len(path.read_text(encoding="utf-8").splitlines())
           for name, path in NAMES.items()}
  assert {n: s for n, s in sizes.items() if s > 400} == {}


def test_each_module_says_its_concept_on_its_first_line():
  for name, path in NAMES.items():
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and doc.splitlines()[0].strip(), f"{name} has no docstring"
    assert len(doc.splitlines()[0]) <= 100, name
