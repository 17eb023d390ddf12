"""The README's Python blocks: each runs alone in a fresh interpreter and prints what it shows.

A reader copies one block, not the page: every block has its own imports and data. A
``text`` block right after a Python block (the next fenced block) is what that block prints.
"""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCES = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.M | re.S)
BLOCKS = [(code, FENCES[i + 1][1] if i + 1 < len(FENCES) and FENCES[i + 1][0] == "text" else None)
          for i, (lang, code) in enumerate(FENCES) if lang == "python"]


def test_readme_has_its_blocks():
  assert len(BLOCKS) >= 3
  assert sum(shown is not None for _, shown in BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i + 1}")
def test_block_runs_alone_in_a_fresh_interpreter(index, tmp_path):
  code, shown = BLOCKS[index]
  result = subprocess.run(
      [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False,
      timeout=600)
  assert result.returncode == 0, f"README block {index + 1} failed alone:\n{result.stderr}"
  if shown is not None:
    assert result.stdout.strip() == shown.strip()


@pytest.mark.slow
def test_traced_layers_agree_with_the_path_rule_on_the_first_model():
  import optax_ldl  # noqa: PLC0415

  namespace = {}
  exec(compile(BLOCKS[0][0], "README.md", "exec"), namespace)  # noqa: S102
  model, params, ids = namespace["model"], namespace["params"], namespace["ids"]
  layers = optax_ldl.trace_layers(lambda p, x: model.apply({"params": p}, x), params, ids)

  def places(**layer_args):  # where each leaf sits and its ratio (not why: that differs)
    rows = optax_ldl.describe(params, layerwise_decay=0.8, **layer_args).rows
    return [(r.path, r.layer, r.lr_ratio, r.weight_decay) for r in rows]

  assert places(layers=layers) == places()


def test_the_readme_claim_about_the_effect_quotes_the_results_page():
  """Every "Δ x ± h" the README quotes is in the page's table of tuned decays."""
  claim = README[README.index("What it does to a pretrained model"):]
  claim = claim[:claim.index("## ")]
  quoted = re.findall(r"([+−-]\d\.\d{4}) ± (\d\.\d{4})", claim)
  assert len(quoted) == 4, claim
  page = (ROOT / "docs" / "results" / "minilm.md").read_text(encoding="utf-8")
  tuned = page[page.index("## Each decay at its tuned learning rate"):page.index("## What the")]
  for delta, half in quoted:
    assert f"| {delta.replace('−', '-')} ± {half} |" in tuned, (delta, half)
