"""The Colab notebooks' sources and helpers (not part of the installed package).

``colab/<name>.py`` are the notebooks' jupytext sources, ``python -m colab.sync`` builds the
``.ipynb`` files from them and ``python -m colab.sync --execute`` stores the outputs of a run in
them; ``colab/minilm.py`` holds the Flax BERT (MiniLM) and the layer-wise decay experiment
(``python -m colab.minilm --help``).
"""
