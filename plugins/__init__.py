"""mlp-lab's built-in implementations (installed as the ``mlp_lab_plugins`` package).

Each registration module (``seed``, ...) is an entry point in the ``mlp_lab`` group, declared in
``pyproject.toml`` exactly as a third-party package declares its own. Registration modules stay
light: they name their models by import path, so listing plugins never imports torch.
"""
