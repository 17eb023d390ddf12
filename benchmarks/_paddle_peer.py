"""Paddle peer: paddle.optimizer.AdamW with a per-parameter lr (ParamAttr.learning_rate).

Run by run.py with the Paddle interpreter (``--paddle-python``):

    python _paddle_peer.py N_LAYERS HIDDEN INTER SCANNED(0/1) WARMUP REPEATS

Prints one JSON line: {"median_s": ..., "times": [...], "version": ...}.
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _trees  # noqa: E402


def main():
  n_layers, h, i, scanned, warmup, repeats = (int(a) for a in sys.argv[1:7])
  import numpy as np
  import paddle

  paddle.set_device("cpu")
  shapes = _trees.flat_shapes(n_layers, h, i, scanned=bool(scanned))
  rng = np.random.default_rng(0)
  params = []
  for name, shape in shapes.items():
    attr = paddle.ParamAttr(
        name=name.replace("/", "."), learning_rate=_trees.ratio(name, n_layers)
    )
    p = paddle.create_parameter(list(shape), "float32", attr=attr)
    params.append(p)
  # Gradients: one backward of sum(p * g); opt.step() never clears them.
  for p in params:
    g = paddle.to_tensor(rng.standard_normal(p.shape, dtype=np.float32) * 1e-3)
    (p * g).sum().backward()
  names = {p.name: n for p, n in zip(params, shapes)}
  opt = paddle.optimizer.AdamW(
      learning_rate=1e-4,
      parameters=params,
      weight_decay=0.01,
      apply_decay_param_fun=lambda pname: _trees.decays(names.get(pname, pname).replace(".", "/")),
  )
  times = []
  for k in range(warmup + repeats):
    t0 = time.perf_counter()
    opt.step()
    # Paddle CPU kernels are synchronous.
    t = time.perf_counter() - t0
    if k >= warmup:
      times.append(t)
  print(json.dumps({"median_s": statistics.median(times), "times": times,
                    "version": paddle.__version__}))


if __name__ == "__main__":
  main()
