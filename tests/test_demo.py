"""The main job runs and its loss falls."""

import numpy as np

from optax_ldl import demo


def test_demo_trains(capsys):
  losses = demo.main(["--steps", "80", "--layers", "2", "--batch", "32"])
  out = capsys.readouterr().out
  assert "peak learning rate per layer group" in out and "embedding: ratio 0.4219" in out
  assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
