"""``mlp-lab new-plugin``: write a ready plugin package from the templates in ``mlp_lab/templates/plugin``.

The package: ``pyproject.toml`` with the ``mlp_lab`` entry point, a module registering one
working implementation (its model in a submodule, imported only when it runs), a test using the
conformance kit, and a README. The name is a distribution name (PEP 508), used in its normalized
form for the distribution, the entry point and the implementation; the module is its Python
spelling.
"""

from __future__ import annotations

import importlib.util
import keyword
import shutil
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from packaging.utils import InvalidName, canonicalize_name

from mlp_lab.errors import UsageError

# template file -> path in the package ({module} is the package's module name)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "package/__init__.py.tmpl": "{module}/__init__.py",
    "package/model.py.tmpl": "{module}/model.py",
    "tests/test_plugin.py.tmpl": "tests/test_{module}.py",
}


@dataclass(frozen=True)
class Names:
    """What the new package is called: distribution, entry point and implementation (``name``), and module."""

    name: str
    module: str


def names_for(raw: str) -> Names:
    """The normalized distribution name and the module name for ``raw``; a :class:`UsageError` if unusable."""
    try:
        name = canonicalize_name(raw, validate=True)
    except InvalidName:
        raise UsageError(
            f"'{raw}' is not a valid distribution name: use letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        ) from None
    if name == "mlp-lab":
        raise UsageError("'mlp-lab' is mlp-lab itself; pick another name for the plugin")
    if name == "all":
        raise UsageError("'all' is reserved ('mlp-lab run --plugin all' runs every implementation); pick another name")
    module = name.replace("-", "_").replace(".", "_")
    if not module.isidentifier() or keyword.iskeyword(module):
        module = f"mlp_lab_{module}"
    if importlib.util.find_spec(module) is not None:
        raise UsageError(f"a module named '{module}' is already importable here; pick another name")
    from mlp_lab.registry import get_registry

    impl = get_registry().implementations.get(name)
    if impl is not None:
        raise UsageError(f"'{name}' is already an implementation ({impl.distribution} {impl.version}); pick another name")
    return Names(name, module)


def render(names: Names) -> dict[str, str]:
    """Each file of the package (relative path -> text)."""
    import mlp_lab

    version = mlp_lab.__version__ if mlp_lab.__version__[0].isdigit() and "+" not in mlp_lab.__version__ else "0.1"
    values = {"name": names.name, "module": names.module, "mlp_lab_version": version}
    root = resources.files("mlp_lab") / "templates" / "plugin"
    return {
        target.format(module=names.module): Template((root / source).read_text(encoding="utf-8")).substitute(values)
        for source, target in FILES.items()
    }


def create(raw_name: str, folder: Path | None = None) -> tuple[Names, Path, list[str]]:
    """Write the package into ``folder`` (default ``./NAME``), which must not exist or be empty.

    Files are written to a temporary folder beside it and moved into place at the end, so a
    failure never leaves half a package. Returns the names, the folder and the files written.
    """
    names = names_for(raw_name)
    target = (folder if folder is not None else Path(names.name)).absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} already exists and is not an empty folder; refusing to overwrite it")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent}: {'not a folder' if target.parent.exists() else 'no such folder'}")
    files = render(names)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        staging.mkdir()
    except OSError as exc:
        raise UsageError(f"cannot write into {target.parent}: {exc.strerror or exc}") from None
    try:
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return names, target, sorted(files)
