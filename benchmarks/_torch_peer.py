"""torch peer: torch.optim.AdamW(fused=True) with timm-style per-layer param groups.

Run by run.py in a process of its own (with torch in the same process as XLA, the
two thread pools share the cores and slow each other down):

    python _torch_peer.py N_LAYERS HIDDEN INTER SCANNED(0/1) WARMUP REPEATS

Groups: one per (layer ratio, weight decay on/off), lr = base lr * ratio, as
timm's ``param_groups_layer_decay`` builds them. A scanned tree's stacked leaves
get one lr each (torch groups cannot give the slices of one tensor different
lrs), so those rows only compare bandwidth.

Prints one JSON line: {"median_s": ..., "times": [...], "version": ..., "n_groups": ...}.
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _trees  # noqa: E402

LR, WD = 1e-4, 0.01  # as run.py


def main():
  n_layers, h, i, scanned, warmup, repeats = (int(a) for a in sys.argv[1:7])
  import numpy as np
  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  rng = np.random.default_rng(0)
  groups: dict = {}
  for name, shape in _trees.flat_shapes(n_layers, h, i, scanned=bool(scanned)).items():
    p = torch.from_numpy((0.02 * rng.standard_normal(shape)).astype(np.float32))
    p.requires_grad_(True)
    p.grad = torch.from_numpy((1e-3 * rng.standard_normal(shape)).astype(np.float32))
    key = (_trees.ratio(name, n_layers), WD if _trees.decays(name) else 0.0)
    groups.setdefault(key, []).append(p)
  opt = torch.optim.AdamW(
      [{"params": ps, "lr": LR * r, "weight_decay": wd} for (r, wd), ps in groups.items()],
      lr=LR, fused=True,
  )
  times = []
  with torch.no_grad():
    for k in range(warmup + repeats):
      t0 = time.perf_counter()
      opt.step()  # CPU kernels are synchronous.
      if k >= warmup:
        times.append(time.perf_counter() - t0)
  print(json.dumps({"median_s": statistics.median(times), "times": times,
                    "version": torch.__version__, "n_groups": len(groups)}))


if __name__ == "__main__":
  main()
