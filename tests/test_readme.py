"""The README's Python snippets run as written."""

import pathlib
import re

from flax import nnx

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def test_readme_python_blocks_run(capsys):
  blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
  assert len(blocks) >= 2
  namespace = {}
  for block in blocks:  # later blocks may use names defined by earlier ones.
    if "nnx.List" in block and not hasattr(nnx, "List"):
      continue  # the NNX snippet needs Flax >= 0.12 (nnx.List, optimizer.update(model, grads))
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
  assert "layers_3/dense/kernel" in capsys.readouterr().out
