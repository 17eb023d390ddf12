"""Two processes on 127.0.0.1 (2 CPU devices each, gloo collectives) train
data-parallel with adamwdl; the result equals the single-process run.

The test starts this file as a script twice (``--worker RANK PORT OUT``).
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _compat import enable_x64
from fixtures import path_name

import optax_ldl

L, D, F, V, B, S = 3, 8, 16, 16, 8, 4
STEPS = 10
N_PROCESSES, LOCAL_DEVICES = 2, 2


def init_params():
  keys = iter(jax.random.split(jax.random.key(0), 3 * L + 2))
  normal = lambda shape: jax.random.normal(next(keys), shape, jnp.float64) / 4  # noqa: E731
  params = {"embed": {"embedding": normal((V, D))}, "head": {"kernel": normal((D, V))}}
  for i in range(L):
    params[f"layers_{i}"] = {"w1": normal((D, F)), "b1": normal((F,)), "w2": normal((F, D))}
  return params


def loss_fn(params, tokens, targets):
  x = params["embed"]["embedding"][tokens]
  for i in range(L):
    p = params[f"layers_{i}"]
    x = x + jax.nn.gelu(x @ p["w1"] + p["b1"][None, None]) @ p["w2"]
  logits = x @ params["head"]["kernel"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def data(step):
  tokens = jax.random.randint(jax.random.fold_in(jax.random.key(1), step), (B, S + 1), 0, V)
  return np.asarray(tokens[:, :-1]), np.asarray(tokens[:, 1:])


def make_tx():
  return optax_ldl.adamwdl(
      3e-2, weight_decay=0.1, layerwise_decay=0.7, n_layers=L,
      apply_decay_param_fun=lambda name: not name.endswith("b1"),
      grad_clip=optax_ldl.clip_grad_by_global_norm(0.5))


def step(params, state, tokens, targets):
  grads = jax.grad(loss_fn)(params, tokens, targets)
  updates, state = make_tx().update(grads, state, params)
  return optax.apply_updates(params, updates), state


def train(params, shard=None, replicated=None):
  """Single process when ``shard`` is None, else data-parallel."""
  tx = make_tx()
  state = jax.jit(tx.init, out_shardings=replicated)(params)
  jitted = jax.jit(step, out_shardings=replicated)
  for t in range(STEPS):
    batch = data(t) if shard is None else tuple(map(shard, data(t)))
    params, state = jitted(params, state, *batch)
  return params


def worker(rank: int, port: int, out: str) -> None:
  jax.config.update("jax_enable_x64", True)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=N_PROCESSES, process_id=rank,
                             initialization_timeout=30)
  try:
    assert jax.process_count() == N_PROCESSES
    assert jax.local_device_count() == LOCAL_DEVICES
    mesh = jax.make_mesh((jax.device_count(),), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    spec = jax.sharding.PartitionSpec
    replicated = jax.sharding.NamedSharding(mesh, spec())
    rows = jax.sharding.NamedSharding(mesh, spec("data"))

    def global_array(x, sharding):  # every process holds the same host data.
      return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    params = jax.tree.map(lambda x: global_array(np.asarray(x), replicated), init_params())
    out_params = train(params, lambda x: global_array(x, rows), replicated)
    if rank == 0:
      flat = {path_name(p): np.asarray(x.addressable_data(0))
              for p, x in jax.tree_util.tree_leaves_with_path(out_params)}
      np.savez(out, **flat)
  finally:
    jax.distributed.shutdown()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _skip_reason() -> str | None:
  try:
    from jax._src.lib import _jax  # noqa: PLC0415
  except ImportError:
    _jax = None
  if _jax is not None and not hasattr(_jax, "make_gloo_tcp_collectives"):
    return "this jaxlib was built without gloo CPU collectives"
  try:
    _free_port()
  except OSError as e:
    return f"cannot bind a TCP port on 127.0.0.1 ({e})"
  return None


def test_two_processes_equal_one():
  import pytest  # noqa: PLC0415

  reason = _skip_reason()
  if reason:
    pytest.skip(reason)
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("JAX_ENABLE_X64", None)
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "params.npz")
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", str(rank), str(port), out],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(N_PROCESSES)
    ]
    logs = []
    try:
      deadline = time.monotonic() + 60
      for p in procs:
        logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
      pytest.fail("the 2-process run did not finish within 60 s")
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
          p.wait()
    for rank, (p, log) in enumerate(zip(procs, logs)):
      assert p.returncode == 0, f"process {rank} failed:\n{log[-4000:]}"
    got = dict(np.load(out))

  with enable_x64(True):
    ref = train(init_params())
    flat = lambda tree: {path_name(p): np.asarray(x)  # noqa: E731
                         for p, x in jax.tree_util.tree_leaves_with_path(tree)}
    want, start = flat(ref), flat(init_params())
  assert got.keys() == want.keys()
  assert got["layers_0/w1"].dtype == np.float64
  err = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
  assert err <= 1e-6, err
  assert max(float(np.max(np.abs(want[k] - start[k]))) for k in want) > 1e-3  # it trained.


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
  worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
