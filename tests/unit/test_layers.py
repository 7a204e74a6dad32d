"""The plain core stays plain: importing every ``actors.core`` module never loads Ray."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import actors.core


def test_importing_the_whole_core_does_not_import_ray() -> None:
    modules = [m.name for m in pkgutil.iter_modules(actors.core.__path__, "actors.core.")]
    assert {"actors.core.state", "actors.core.table", "actors.core.signals"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "import actors\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not loaded, loaded\n"
        "print(len(sys.modules))\n"
    )
    # A fresh interpreter: this test process may already hold Ray from other tests.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
