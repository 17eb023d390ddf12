"""Generate PaddlePaddle reference ("golden") data for the optax_ldl parity tests.

What it needs (a separate environment; none of this is a dependency of optax_ldl):

    python3 -m venv paddle-venv && . paddle-venv/bin/activate
    pip install paddlepaddle==3.3.1 numpy          # CPU wheel, ~900 MB installed
    pip install --no-deps paddlenlp==2.8.1         # only its source files are used

How to run (writes paddle_golden.npz beside this file):

    python tests/parity/generate_paddle_golden.py

Instead of installing PaddleNLP, its wheel can be given with
`--paddlenlp-wheel paddlenlp-2.8.1-py3-none-any.whl` (from `pip download --no-deps
paddlenlp==2.8.1`). Either way only `paddlenlp/ops/optimizer/adamwdl.py` (for
`layerwise_lr_decay`) and `paddlenlp/ops/optimizer/lr.py` (for `InverseSquareRootSchedule`)
are loaded, by file path: `paddlenlp/__init__` pulls in PaddleNLP's heavy dependencies and
is never imported. Both files import only `paddle`.

Why AdamW and not PaddleNLP's AdamWDL class: on Paddle 3.x `AdamWDL.step()` raises
`TypeError: _create_optimization_pass() got an unexpected keyword argument 'param_group_idx'`.
With that signature patched it runs, but then decays twice: once in its own
`_append_decoupled_weight_decay` (p *= 1 - lr*wd, unscaled lr) and again inside the fused
adamw kernel (with lr*ratio). E.g. p=1, g=+1, lr=0.1, wd=0.5, ratio=0.5 gives
0.95*(1-0.025)-0.05 = 0.87625 instead of the documented 1-0.05*(1+0.5) = 0.925. The golden
trajectories therefore use `paddle.optimizer.AdamW` with PaddleNLP's ratio multiplied into
each parameter's `optimize_attr["learning_rate"]` (what AdamWDL does around its adam op),
which is exactly the documented formula. The float64 NumPy re-derivation in this script
checks that claim on every case.

The layout of the .npz is described in README.md beside this file.
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import types
import zipfile

import numpy as np
import paddle

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 25
SEED = 20240611

# --------------------------------------------------------------------------------------
# PaddleNLP sources, loaded by path so that paddlenlp/__init__ (heavy deps) never runs.
# --------------------------------------------------------------------------------------
NLP_FILES = {"adamwdl": "paddlenlp/ops/optimizer/adamwdl.py", "lr": "paddlenlp/ops/optimizer/lr.py"}


def _load_module(mod_name, path):
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_paddlenlp(wheel=None):
    if wheel:
        tmp = tempfile.mkdtemp(prefix="paddlenlp_src_")
        with zipfile.ZipFile(wheel) as zf:
            for rel in NLP_FILES.values():
                zf.extract(rel, tmp)
        root = tmp
    else:
        # find_spec on a top-level package locates it without executing its __init__.
        spec = importlib.util.find_spec("paddlenlp")
        if spec is None:
            sys.exit(
                "paddlenlp not found: pip install --no-deps paddlenlp==2.8.1, "
                "or pass --paddlenlp-wheel"
            )
        root = os.path.dirname(list(spec.submodule_search_locations)[0])
    mods = {
        k: _load_module("_paddlenlp_" + k, os.path.join(root, rel)) for k, rel in NLP_FILES.items()
    }
    assert "paddlenlp" not in sys.modules
    return mods["adamwdl"].layerwise_lr_decay, mods["lr"].InverseSquareRootSchedule


# --------------------------------------------------------------------------------------
# A. Optimizer trajectories
# --------------------------------------------------------------------------------------
def model_shapes(n_layers):
    shapes = [
        ("embeddings.word_embeddings.weight", (30, 8)),
        ("embeddings.position_embeddings.weight", (16, 8)),
        ("embeddings.layer_norm.weight", (8,)),
        ("embeddings.layer_norm.bias", (8,)),
    ]
    for i in range(n_layers):
        shapes += [
            (f"encoder.layers.{i}.self_attn.q_proj.weight", (8, 8)),
            (f"encoder.layers.{i}.self_attn.q_proj.bias", (8,)),
            (f"encoder.layers.{i}.norm1.weight", (8,)),
        ]
    shapes += [
        ("pooler.dense.weight", (8, 8)),
        ("pooler.dense.bias", (8,)),
        ("classifier.weight", (8, 3)),
        ("classifier.bias", (3,)),
    ]
    return shapes


DEFAULTS = dict(
    learning_rate=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=0.01,
    layerwise_decay=0.8, n_layers=3, clip=None, decay_rule="all", steps=STEPS,
)

CASES = [
    ("constant", {}),
    ("inv_sqrt",
     dict(learning_rate={"warmup_steps": 5, "learning_rate": 0.02}, layerwise_decay=0.75)),
    ("mask", dict(weight_decay=0.05, decay_rule="no_bias_no_norm")),
    ("clip_global", dict(clip={"kind": "global_norm", "clip_norm": 2.0})),
    ("clip_norm", dict(clip={"kind": "norm", "clip_norm": 0.7})),
    ("clip_value", dict(clip={"kind": "value", "max": 0.3, "min": -0.1})),
    ("betas", dict(beta1=0.8, beta2=0.95, epsilon=1e-6)),
    ("decay1", dict(layerwise_decay=1.0)),
    ("layers12", dict(n_layers=12, layerwise_decay=0.9)),
]

# Gradients: N(0,1) times a per-step factor in [0.1, 3], times this fixed scale. Without it
# the global norm of ~700-1400 unit normals (27-38 times the factor) would exceed
# clip_norm=2.0 on every step; at 1/8 every clip case has steps that clip and steps that
# don't (asserted below). The normals are rounded to 4 significant bits and the factor to
# a multiple of 1/16, so each gradient is exact in float32 and its low mantissa bytes are
# zero: the gradients then compress to ~40% instead of ~93%, which keeps the .npz under 2 MB
# (the trajectories and schedule tables, the bulk of it, are incompressible float noise).
GRAD_SCALE = 0.125


def round_4_bits(x):
    mant, exp = np.frexp(x)  # mant in [0.5, 1)
    return np.ldexp(np.round(mant * 16.0) / 16.0, exp)


def make_grads(rng, shapes):
    factors = np.round(rng.uniform(0.1, 3.0, size=STEPS) * 16.0) / 16.0
    grads = []
    for _, s in shapes:
        exact = (
            GRAD_SCALE
            * factors.reshape((STEPS,) + (1,) * len(s))
            * round_4_bits(rng.standard_normal((STEPS,) + s))
        )
        g = exact.astype(np.float32)
        assert np.array_equal(g.astype(np.float64), exact)
        grads.append(g)
    return grads


def decays(rule, static_name):
    if rule == "all":
        return True
    if rule == "no_bias_no_norm":
        return "bias" not in static_name and "norm" not in static_name
    raise ValueError(rule)


def make_clip(clip):
    if clip is None:
        return None
    if clip["kind"] == "global_norm":
        return paddle.nn.ClipGradByGlobalNorm(clip_norm=clip["clip_norm"])
    if clip["kind"] == "norm":
        return paddle.nn.ClipGradByNorm(clip_norm=clip["clip_norm"])
    if clip["kind"] == "value":
        return paddle.nn.ClipGradByValue(max=clip["max"], min=clip["min"])
    raise ValueError(clip)


def run_paddle_case(
    case_idx, cfg, layerwise_lr_decay, InverseSquareRootSchedule  # noqa: N803 - PaddleNLP's class
):
    rng = np.random.default_rng([SEED, case_idx])
    shapes = model_shapes(cfg["n_layers"])
    names = [n for n, _ in shapes]
    init = [rng.normal(0.0, 0.5, size=s).astype(np.float32) for _, s in shapes]
    grads = make_grads(rng, shapes)

    params = [
        paddle.create_parameter(
            list(s), "float32", default_initializer=paddle.nn.initializer.Assign(v)
        )
        for (_, s), v in zip(shapes, init)
    ]
    # Paddle's dynamic names (create_parameter_N.w_0) -> the static names the rules look at.
    name_dict = {p.name: n for p, n in zip(params, names)}
    assert len(name_dict) == len(params)

    # PaddleNLP 2.8.1's layerwise_lr_decay *returns* the ratio; AdamWDL multiplies it into
    # optimize_attr["learning_rate"] around its adam op. Do that once, up front.
    ratio = np.array(
        [layerwise_lr_decay(cfg["layerwise_decay"], name_dict, cfg["n_layers"], p) for p in params]
    )
    for p, r in zip(params, ratio):
        p.optimize_attr["learning_rate"] *= float(r)
    decay_mask = np.array([decays(cfg["decay_rule"], n) for n in names])

    lr_cfg = cfg["learning_rate"]
    sched = None
    if isinstance(lr_cfg, dict):
        sched = InverseSquareRootSchedule(
            warmup_steps=lr_cfg["warmup_steps"], learning_rate=lr_cfg["learning_rate"]
        )
    opt = paddle.optimizer.AdamW(
        learning_rate=sched if sched is not None else lr_cfg,
        beta1=cfg["beta1"], beta2=cfg["beta2"], epsilon=cfg["epsilon"],
        parameters=params, weight_decay=cfg["weight_decay"],
        # Paddle hands this the dynamic name; decide on the static one.
        apply_decay_param_fun=lambda dyn_name: decays(cfg["decay_rule"], name_dict[dyn_name]),
        grad_clip=make_clip(cfg["clip"]),
    )

    traj = [np.zeros((STEPS,) + s, np.float32) for _, s in shapes]
    lrs = np.zeros(STEPS)
    for t in range(STEPS):
        g_t = [paddle.to_tensor(g[t]) for g in grads]
        loss = paddle.add_n([(p * g).sum() for p, g in zip(params, g_t)])
        loss.backward()
        for p, g in zip(params, grads):  # d/dp sum(p*G) == G exactly
            assert np.array_equal(p.grad.numpy(), g[t])
        lrs[t] = opt.get_lr()
        opt.step()
        opt.clear_grad()
        if sched is not None:
            sched.step()
        for k, p in enumerate(params):
            traj[k][t] = p.numpy()
    return dict(
        names=names, init=init, grads=grads, params=traj, ratio=ratio, decay_mask=decay_mask, lr=lrs
    )


def numpy_reference(cfg, res):
    """The documented update, in float64, from the same inits/grads/lrs/ratios."""
    b1, b2, eps, wd = cfg["beta1"], cfg["beta2"], cfg["epsilon"], cfg["weight_decay"]
    p = [x.astype(np.float64) for x in res["init"]]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    out = [np.zeros(g.shape) for g in res["grads"]]
    clip = cfg["clip"]
    clipped_steps = 0
    # The schedule from its closed form, not from what Paddle reported.
    lr_cfg = cfg["learning_rate"]
    if isinstance(lr_cfg, dict):
        w, peak = lr_cfg["warmup_steps"], lr_cfg["learning_rate"]
        lrs = np.array(
            [peak * k / w if k < w else peak * np.sqrt(w) / np.sqrt(k) for k in range(STEPS)]
        )
    else:
        lrs = np.full(STEPS, lr_cfg)
    assert np.allclose(lrs, res["lr"], rtol=1e-12, atol=0), (lrs, res["lr"])
    for t in range(STEPS):
        g = [x[t].astype(np.float64) for x in res["grads"]]
        before = [x.copy() for x in g]
        if clip is not None and clip["kind"] == "global_norm":
            gn = np.sqrt(sum(float((x * x).sum()) for x in g))
            g = [x * (clip["clip_norm"] / max(gn, clip["clip_norm"])) for x in g]
        elif clip is not None and clip["kind"] == "norm":
            g = [
                x * (clip["clip_norm"] / max(np.sqrt((x * x).sum()), clip["clip_norm"])) for x in g
            ]
        elif clip is not None and clip["kind"] == "value":
            g = [np.clip(x, clip["min"], clip["max"]) for x in g]
        clipped_steps += any(not np.array_equal(a, b) for a, b in zip(before, g))
        n = t + 1
        for k in range(len(p)):
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
            mhat = m[k] / (1 - b1**n)
            vhat = v[k] / (1 - b2**n)
            lr_p = lrs[t] * res["ratio"][k]
            p[k] = p[k] - lr_p * (mhat / (np.sqrt(vhat) + eps) + wd * res["decay_mask"][k] * p[k])
            out[k][t] = p[k]
    err = max(float(np.abs(o - q).max()) for o, q in zip(out, res["params"]))
    return err, clipped_steps


# --------------------------------------------------------------------------------------
# C. Sparse (row) gradients: lazy_mode
# --------------------------------------------------------------------------------------
LAZY_CFG = dict(learning_rate=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8, steps=STEPS,
                num_embeddings=20, embedding_dim=4, ids_per_step=6)


def lazy_inputs():
    rng = np.random.default_rng([SEED, 1000])
    c = LAZY_CFG
    n_rows = c["num_embeddings"]
    init = rng.normal(0.0, 0.5, size=(n_rows, c["embedding_dim"])).astype(np.float32)
    # Drawn with replacement: repeated ids in one step exercise Paddle's row merge. The last
    # row is looked up on every step: when it is absent, Paddle 3.3.1's CPU non-lazy sparse
    # Adam loop reads one element past the end of the gradient's row list (and, if that
    # garbage equals a later row index, applies a garbage gradient row to it), which makes
    # its output depend on allocator state: two identical runs in one process differed by 3e-2.
    ids = rng.integers(0, n_rows, size=(STEPS, c["ids_per_step"]))
    ids[:, -1] = n_rows - 1
    w = rng.standard_normal((STEPS, c["ids_per_step"], c["embedding_dim"])).astype(np.float32)
    dense = np.zeros((STEPS,) + init.shape, np.float64)
    for t in range(STEPS):
        np.add.at(dense[t], ids[t], w[t].astype(np.float64))
    return init, ids, w, dense.astype(np.float32)


def run_paddle_embedding(init, ids, w, sparse, lazy):
    c = LAZY_CFG
    emb = paddle.nn.Embedding(c["num_embeddings"], c["embedding_dim"], sparse=sparse)
    emb.weight.set_value(init)
    opt = paddle.optimizer.Adam(
        learning_rate=c["learning_rate"], beta1=c["beta1"], beta2=c["beta2"],
        epsilon=c["epsilon"], parameters=emb.parameters(), lazy_mode=lazy,
    )
    out = np.zeros((STEPS,) + init.shape, np.float32)
    grads = np.zeros((STEPS,) + init.shape, np.float32)
    for t in range(STEPS):
        loss = (emb(paddle.to_tensor(ids[t])) * paddle.to_tensor(w[t])).sum()
        loss.backward()
        if not sparse:
            grads[t] = emb.weight.grad.numpy()
        opt.step()
        opt.clear_grad()
        out[t] = emb.weight.numpy()
    return out, grads


def numpy_adam_rows(init, dense_grads, lazy, paddle_sparse_kernel):
    """Adam in float64. lazy: rows absent from the step's gradient keep p, m, v.

    paddle_sparse_kernel models Paddle 3.3.1's CPU sparse-gradient Adam kernel:
    - it advances beta1_pow/beta2_pow before the update reads them (in eager mode the output
      aliases the input), so the bias correction uses step t+1 instead of t;
    - in non-lazy mode, rows absent from the gradient get m*=b1, v*=b2 and the update with
      eps not multiplied by sqrt(1-b2^t), i.e. mhat/(sqrt(vhat) + eps/sqrt(1-b2^t)).
    """
    c = LAZY_CFG
    b1, b2, eps, lr = c["beta1"], c["beta2"], c["epsilon"], c["learning_rate"]
    p = init.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out = np.zeros(dense_grads.shape)
    for t in range(STEPS):
        g = dense_grads[t].astype(np.float64)
        present = np.any(g != 0, axis=1)
        rows = present if lazy else np.ones(p.shape[0], bool)
        n = t + 2 if paddle_sparse_kernel else t + 1
        m[rows] = b1 * m[rows] + (1 - b1) * g[rows]
        v[rows] = b2 * v[rows] + (1 - b2) * g[rows] ** 2
        eps_hat = np.full(p.shape[0], eps)
        if paddle_sparse_kernel and not lazy:
            eps_hat[~present] = eps / np.sqrt(1 - b2**n)
        upd = lr * (m / (1 - b1**n)) / (np.sqrt(v / (1 - b2**n)) + eps_hat[:, None])
        p[rows] -= upd[rows]
        out[t] = p
    return out


# --------------------------------------------------------------------------------------
# D. Schedule values, E. layer rule table
# --------------------------------------------------------------------------------------
SCHEDULES = [(1, 1.0), (4, 1.0), (100, 5e-4), (4000, 2e-3), (10000, 0.1)]
SCHEDULE_LEN = 20000

LAYER_RULE_NAMES = [
    "encoder.layers.0.linear1.weight",
    "encoder.layers.11.norm2.bias",
    "encoder.layers.5.self_attn.k_proj.weight",
    "ernie.encoder.layers.3.linear2.weight",
    "embeddings.word_embeddings.weight",
    "ernie.embeddings.position_embeddings.weight",
    "pooler.dense.weight",
    "classifier.bias",
    "encoder.layers.12.x",
    "decoder.layers.3.linear1.weight",
    # Malformed layer names: the rule's int()/split() raise on these.
    "encoder.layers.norm.weight",
    "encoder.layers_norm.weight",
]


def schedule_values(InverseSquareRootSchedule, warmup, lr):  # noqa: N803 - PaddleNLP's class
    s = InverseSquareRootSchedule(warmup_steps=warmup, learning_rate=lr)
    vals = np.zeros(SCHEDULE_LEN)
    for k in range(SCHEDULE_LEN):
        # The constructor already stepped once (last_epoch -1 -> 0).
        assert s.last_epoch == k
        vals[k] = s.last_lr
        assert s.get_lr() == s.last_lr
        s.step()
    return vals


def schedule_restart(InverseSquareRootSchedule):  # noqa: N803 - PaddleNLP's class
    def snap(s):
        return {
            "last_epoch": int(s.last_epoch),
            "last_lr": float(s.last_lr),
            "get_lr": float(s.get_lr()),
        }

    s = InverseSquareRootSchedule(4, 1.0, last_epoch=7)
    rec = {"warmup_steps": 4, "learning_rate": 1.0, "last_epoch_arg": 7,
           "after_construction": snap(s), "state_dict_after_construction": {}, "after_steps": []}
    rec["state_dict_after_construction"] = {
        k: (v if isinstance(v, (int, str)) else float(v)) for k, v in s.state_dict().items()
    }
    for _ in range(3):
        s.step()
        rec["after_steps"].append(snap(s))
    rec["state_dict_after_steps"] = {
        k: (v if isinstance(v, (int, str)) else float(v)) for k, v in s.state_dict().items()
    }
    return rec


def layer_rule_table(layerwise_lr_decay):
    ratios, errors = [], []
    for n in LAYER_RULE_NAMES:
        param = types.SimpleNamespace(name="dyn_" + n)  # the rule only reads param.name
        try:
            ratios.append(float(layerwise_lr_decay(0.9, {param.name: n}, 12, param)))
            errors.append("")
        except Exception as e:  # recorded, not fatal: the port must reproduce the failure
            ratios.append(np.nan)
            errors.append(f"{type(e).__name__}: {e}")
    return np.array(ratios), np.array(errors)


# --------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paddlenlp-wheel", help="read PaddleNLP's two source files from this wheel")
    ap.add_argument("--out", default=os.path.join(HERE, "paddle_golden.npz"))
    args = ap.parse_args()

    paddle.set_device("cpu")
    # PaddleNLP's function and class, under their own names.
    layerwise_lr_decay, InverseSquareRootSchedule = load_paddlenlp(  # noqa: N806
        args.paddlenlp_wheel
    )
    data = {}

    print(f"paddle {paddle.__version__}")
    print(f"{'case':<12} {'max|paddle-f64|':>16} {'clipped steps':>14}")
    for idx, (case, over) in enumerate(CASES):
        cfg = dict(DEFAULTS, **over)
        res = run_paddle_case(idx, cfg, layerwise_lr_decay, InverseSquareRootSchedule)
        err, clipped = numpy_reference(cfg, res)
        print(f"{case:<12} {err:16.3e} {clipped if cfg['clip'] else '-':>14}")
        assert err <= 1e-5, (case, err)
        if cfg["clip"] is not None:
            assert 0 < clipped < STEPS, (case, clipped)
        data[f"{case}/names"] = np.array(res["names"])
        for k in range(len(res["names"])):
            data[f"{case}/init/{k}"] = res["init"][k]
            data[f"{case}/grads/{k}"] = res["grads"][k]
            data[f"{case}/params/{k}"] = res["params"][k]
        data[f"{case}/ratio"] = res["ratio"].astype(np.float64)
        data[f"{case}/decay_mask"] = res["decay_mask"]
        data[f"{case}/lr"] = res["lr"]
        config = {k: cfg[k] for k in ("learning_rate", "beta1", "beta2", "epsilon", "weight_decay",
                                      "layerwise_decay", "n_layers", "clip", "steps")}
        config["decay_rule"] = {
            "all": "every parameter",
            "no_bias_no_norm": "static names containing neither 'bias' nor 'norm'",
        }[cfg["decay_rule"]]
        config["reference"] = (
            "paddle.optimizer.AdamW, "
            "optimize_attr['learning_rate'] *= layerwise_lr_decay ratio"
        )
        data[f"{case}/config"] = np.array(json.dumps(config))

    # C. Sparse row gradients (see numpy_adam_rows for what Paddle's sparse kernel does).
    # dense_grad/ is the same table with sparse=False: Paddle's ordinary dense Adam kernel.
    init, ids, w, dense_grads = lazy_inputs()
    _, check_grads = run_paddle_embedding(init, ids, w, sparse=False, lazy=False)
    assert np.allclose(check_grads, dense_grads, atol=1e-6), "dense-gradient reconstruction"
    print(f"{'embedding':<12} {'documented':>11} {'paddle sparse kernel model':>27}")
    embedding_cases = (("lazy", True, True), ("dense", True, False), ("dense_grad", False, False))
    for prefix, sparse, lazy in embedding_cases:
        traj, _ = run_paddle_embedding(init, ids, w, sparse=sparse, lazy=lazy)
        errs = [
            float(np.abs(numpy_adam_rows(init, dense_grads, lazy, model) - traj).max())
            for model in (False, True)
        ]
        print(f"{prefix:<12} {errs[0]:11.3e} {errs[1]:27.3e}")
        # Dense gradients follow the documented Adam; sparse ones follow the kernel model.
        assert errs[int(sparse)] <= 1e-5, (prefix, errs)
        data[f"{prefix}/init"] = init
        data[f"{prefix}/grads"] = dense_grads
        data[f"{prefix}/params"] = traj
        cfg = dict(LAZY_CFG, optimizer="paddle.optimizer.Adam", lazy_mode=lazy,
                   embedding_sparse=sparse, bias_correction_step="t+1" if sparse else "t",
                   absent_rows_eps_unscaled=bool(sparse and not lazy))
        data[f"{prefix}/config"] = np.array(json.dumps(cfg))
    data["lazy/ids"] = ids

    # D.
    for i, (warmup, lr) in enumerate(SCHEDULES):
        data[f"schedule/{i}/values"] = schedule_values(InverseSquareRootSchedule, warmup, lr)
        data[f"schedule/{i}/config"] = np.array(
            json.dumps({"warmup_steps": warmup, "learning_rate": lr})
        )
    data["schedule/restart"] = np.array(json.dumps(schedule_restart(InverseSquareRootSchedule)))

    # E.
    ratios, errors = layer_rule_table(layerwise_lr_decay)
    data["layer_rule/names"] = np.array(LAYER_RULE_NAMES)
    data["layer_rule/ratios"] = ratios
    data["layer_rule/errors"] = errors
    data["layer_rule/config"] = np.array(json.dumps({"decay_rate": 0.9, "n_layers": 12}))

    np.savez_compressed(args.out, **data)
    size_mb = os.path.getsize(args.out) / 1e6
    print(f"wrote {os.path.basename(args.out)}: {len(data)} arrays, {size_mb:.2f} MB")


if __name__ == "__main__":
    main()
