"""mlp-lab: build, check and compare neural-network implementations side by side.

What a plugin needs is importable from here without importing torch or MLflow.
"""

from mlp_lab.hookspecs import hookimpl
from mlp_lab.model import Model
from mlp_lab.options import Hyperparams, Option

__all__ = ["Hyperparams", "Model", "Option", "__version__", "hookimpl"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlp-lab")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
