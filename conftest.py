"""Root conftest of the harness's own checkout.

The plugin arrives through its pytest11 entry point, so the package must be installed
(`python -m pip install -e .`); a bare checkout says so instead of failing on imports.
"""

import importlib.util

if importlib.util.find_spec("micropython_hil") is None:
    raise ImportError("micropython_hil is not installed: run `python -m pip install -e .` in this checkout")
