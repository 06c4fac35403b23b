"""Root conftest: loads the harness plugin from this checkout when it is not installed.

Installed (`pip install -e .`), the plugin arrives through its pytest11 entry point;
registering it twice would fail, so only a bare checkout gets it from here.
"""

from importlib.metadata import entry_points

if not any(ep.value == "harness.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["harness.plugin"]
