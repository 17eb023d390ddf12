"""torch and Paddle peers, each in a process of its own (``_torch_peer.py``, ``_paddle_peer.py``).

torch: rounds of (a torch process, the same number of adamwdl steps here), so both see
the same load (in one process torch's and XLA's thread pools share the cores and slow
each other down). Paddle: a subprocess with the interpreter that has paddlepaddle; its
ratio uses adamwdl's median from the step table.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys

import _steps
import _trees

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_ROUNDS = 3


@dataclasses.dataclass
class PeerResult:
  """One peer on one tree: its median and adamwdl's, or why it did not run."""

  label: str  # the tree
  peer: str  # what ran, e.g. "torch 2.13.0 AdamW(fused=True), 28 groups"
  peer_s: float | None = None
  adamwdl_s: float | None = None
  how: str = ""
  why_not: str | None = None
  raw: dict = dataclasses.field(default_factory=dict)


def run_peer(python: str, script: str, module: str, args, timeout: int):
  """Runs a peer script; (its JSON result, None) or (None, why not)."""
  cmd = [python, os.path.join(HERE, script), *(str(int(a)) for a in args)]
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except Exception as e:  # noqa: BLE001
    return None, f"failed: {e}"
  for line in out.stdout.splitlines()[::-1]:
    if line.startswith("{"):
      return json.loads(line), None
  if f"No module named '{module}'" in out.stderr:
    return None, "not installed"
  err = (out.stderr.strip().splitlines() or ["?"])[-1]
  return None, f"failed: {err[:80]}"


def _shape_args(res: _steps.StepResult, warmup: int, repeats: int):
  _, h, i = _trees.SHAPES[res.shape]
  return (res.depth, h, i, res.scanned, warmup, repeats)


def torch_peer(res: _steps.StepResult) -> PeerResult:
  """torch's fused AdamW in rounds alternated with ``res.runners["adamwdl"]``."""
  name = "torch AdamW(fused=True)"
  if importlib.util.find_spec("torch") is None:
    return PeerResult(res.label, name, why_not="not installed (pip install -e '.[bench]')")
  per_round = max(3, res.repeats // 3)
  runs, ours = [], []
  for _ in range(TORCH_ROUNDS):
    pr, err = run_peer(sys.executable, "_torch_peer.py", "torch",
                       _shape_args(res, min(res.warmup, 3), per_round), timeout=1800)
    if pr is None:
      return PeerResult(res.label, name, why_not=err)
    runs.append(pr)
    ours += _steps.bench_steps({"adamwdl": res.runners["adamwdl"]}, 1, per_round)["adamwdl"]
  return PeerResult(
    res.label,
    f"torch {runs[0]['version']} AdamW(fused=True), {runs[0]['n_groups']} groups",
    peer_s=statistics.median(t for pr in runs for t in pr["times"]),
    adamwdl_s=statistics.median(ours),
    how=f"own process; {TORCH_ROUNDS} rounds alternated with adamwdl",
    raw={"torch": runs, "adamwdl": ours},
  )


def paddle_peer(res: _steps.StepResult, python: str | None) -> PeerResult:
  """Paddle's AdamW with a per-parameter lr, run by ``python`` (an interpreter with paddle)."""
  name = "Paddle AdamW (per-param lr)"
  if not python:
    return PeerResult(res.label, name, why_not="not run (no --paddle-python / $PADDLE_PYTHON)")
  if not os.path.exists(python):
    return PeerResult(res.label, name, why_not=f"not installed ({python} does not exist)")
  pr, err = run_peer(python, "_paddle_peer.py", "paddle",
                     _shape_args(res, res.warmup, res.repeats), timeout=900)
  if pr is None:
    return PeerResult(res.label, name, why_not=err)
  return PeerResult(
    res.label,
    f"Paddle {pr['version']} AdamW, ParamAttr lr per param",
    peer_s=pr["median_s"],
    adamwdl_s=res.median("adamwdl"),
    how="subprocess; adamwdl from the step table",
    raw=pr,
  )


def measure(res: _steps.StepResult, paddle_python: str | None) -> list[PeerResult]:
  """Both peers on ``res``'s tree; frees ``res``'s runners before Paddle runs."""
  for kind in [k for k in res.runners if k != "adamwdl"]:
    del res.runners[kind]
  out = [torch_peer(res)]
  res.runners.clear()
  out.append(paddle_peer(res, paddle_python))
  return out
