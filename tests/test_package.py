"""The shape of the installed package: its public API, its import graph, its layers."""

import ast
import subprocess
import sys
from pathlib import Path

import micropython_hil

PACKAGE = Path(micropython_hil.__file__).resolve().parent
NAME = "micropython_hil"

# Areas from the bottom up: a module may import its own area and the areas below it, never above.
LAYERS = [
    {"errors", "secret", "tempdirs", "tether"},
    {"containers"},  # Docker engines, their ownership labels, locally built images
    {"sim"},
    {"board"},
    {"mqtt", "cloud", "netfault"},
    {"mqttsn"},  # the MQTT-SN gateway bridges to the brokers of mqtt
    {"deploy"},
    {"bench", "fuzz", "mutate", "fleet"},  # fleet: many boards in one test (roles, sync, fleets)
    {"plugin", "cli"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([NAME, *parts])


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import of the package's own modules in a file,
    at any depth (function bodies and `if TYPE_CHECKING:` blocks included)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith(NAME):
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            found += [(s, [], node.lineno) for s in submodules]
            if len(submodules) < len(names):  # names from the module itself, not only its submodules
                found.append((target, [n for n in names if f"{target}.{n}" not in modules], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith(NAME)]
    return found


def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: {t for t, _, _ in imports_of(path, modules) if t in modules and t != name}
            for name, path in modules.items()}


def area(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_every_area_imports_only_its_own_and_lower_areas():
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    wrong = []
    for module, targets in graph().items():
        source = area(module)
        if source is None:
            continue  # the package's __init__: the public facade over every area
        assert source in level, f"{module}: area {source!r} is in no layer of this test"
        for target in targets:
            if area(target) is not None and area(target) != source and level[area(target)] > level[source]:
                wrong.append(f"{module} imports {target} (a higher layer)")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_names():
    modules = package_modules()
    private = [f"{module_name(path)}:{line} imports {name} from {target}"
               for path in modules.values()
               for target, names, line in imports_of(path, modules)
               for name in names if name.startswith("_") and name != "__future__"]
    assert not private, "\n".join(private)


def test_the_public_api_is_curated_and_resolves():
    assert sorted(micropython_hil.__all__) == sorted(set(micropython_hil.__all__)), "duplicates in __all__"
    missing = [name for name in micropython_hil.__all__ if getattr(micropython_hil, name, None) is None]
    assert not missing, f"in __all__ but not importable: {missing}"
    for name in ("Board", "Simulator", "Signal", "Telemetry", "FaultProxy", "Firmware", "Secret",
                 "HarnessError", "BoardError", "Fuzzer", "probe", "AmqttBroker", "MosquittoBroker"):
        assert name in micropython_hil.__all__, name


def test_subpackages_name_their_exports():
    for sub in ("board", "sim", "mqtt", "mqttsn", "netfault", "deploy", "bench", "fuzz", "fleet", "containers"):
        module = __import__(f"{NAME}.{sub}", fromlist=["__all__"])
        assert module.__all__, sub
        for name in module.__all__:
            assert hasattr(module, name), f"{NAME}.{sub}.__all__ names {name}, which it lacks"


def test_importing_the_package_and_plugin_leaves_hypothesis_unloaded():
    code = ("import sys, micropython_hil, micropython_hil.plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hypothesis', 'hypothesis_jsonschema')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys, micropython_hil; micropython_hil.Fuzzer; print('hypothesis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"


def test_device_side_files_ship_inside_the_package():
    from micropython_hil.sim.profiles import PROFILE_DIR, SIM_ROOT, known_profiles

    assert (SIM_ROOT / "machine.py").is_file() and (SIM_ROOT / "_simprotocol.py").is_file()
    assert PROFILE_DIR.is_dir() and "esp32" in known_profiles()
