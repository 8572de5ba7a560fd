"""Benchmarks: mlp-lab against plain-PyTorch references of the same work, measured side by side.

``python -m benchmarks`` (``--quick`` for a short run, ``--help`` for the options) prints one row
per case with mlp-lab's figure, the reference's, their ratio and the goal. The references
(``ref_*.py``) are short hand-written PyTorch scripts that import nothing from mlp-lab.
"""
