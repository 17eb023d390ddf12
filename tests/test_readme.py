"""The README's Python snippets run as written, in order, and print what the README shows."""

import pathlib
import re

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def test_readme_python_blocks_run_and_print_the_shown_table(capsys):
  blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
  assert len(blocks) >= 3
  namespace = {}
  for block in blocks:  # the page reads top to bottom: later blocks use the model above.
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
  shown = re.search(r"```text\n(.*?)```", README, flags=re.S)
  assert shown is not None
  assert capsys.readouterr().out.strip() == shown.group(1).strip()
  # The traced layers and the path rule agree on this model.
  import optax_ldl  # noqa: PLC0415

  params, layers = namespace["params"], namespace["layers"]
  assert (optax_ldl.describe(params, layerwise_decay=0.8, layers=layers).rows
          == optax_ldl.describe(params, layerwise_decay=0.8).rows)
