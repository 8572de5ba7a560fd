"""Commands that only list or help import neither torch nor MLflow (seconds each to import)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import subprocess_env

PROBE = """
import sys
from mlp_lab.cli import main
sys.argv = ["mlp-lab", *{args!r}]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
print("HEAVY", sorted(m for m in ("torch", "mlflow", "matplotlib", "numpy") if m in sys.modules))
print("CODE", code)
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["run", "--help"], ["plugins"], ["plugins", "--json"], ["--version"], ["new-plugin", "--help"]]
)
def test_light_commands_do_not_import_torch_or_mlflow(args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, env=subprocess_env())
    assert "CODE 0" in out.stdout, out.stdout + out.stderr
    assert "HEAVY []" in out.stdout, out.stdout
