"""The simulated board's MicroPython files (simulated_boards/) import each other without cycles;
so do the host end's modules (harness/sim/).

CPython never runs those files, so this reads them with `ast`: every import at any level of a
file (a function-level import is an edge too: it still makes the modules depend on each other),
resolved the way the unix port resolves it with simulated_boards/ on MICROPYPATH: `import x`
is the file x.py at the top of the folder (part files in devices/ are loaded by path and are
never imported by name, but their own imports count).
"""

from __future__ import annotations

import ast
from pathlib import Path

import micropython_hil.sim
from micropython_hil.sim.profiles import SIM_ROOT

HOST_SIM = Path(micropython_hil.sim.__file__).parent  # harness/sim: the simulator's host end

# The one cycle kept on purpose (see simulated_boards/_simboot.py): at a REPL launched without
# _simboot, whichever of time, select, socket the firmware imports first must still set up all
# the u-prefixed aliases, so each imports _simboot, which imports all three. No acyclic graph
# can do that, and the port has no other hook. Nothing else may close a cycle.
ALIAS_EDGES = {("time", "_simboot"), ("select", "_simboot"), ("socket", "_simboot")}


def _node(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return rel.name if len(rel.parts) == 1 else rel.as_posix()


def import_graph(root: Path = SIM_ROOT) -> dict[str, set[str]]:
    """Module -> the simulated_boards modules it imports (anywhere in the file)."""
    files = sorted(p for p in root.rglob("*.py") if p.name != "__init__.py")
    importable = {p.stem for p in files if p.parent == root}
    graph: dict[str, set[str]] = {}
    for path in files:
        deps = graph.setdefault(_node(path, root), set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            deps.update(n.split(".")[0] for n in names if n.split(".")[0] in importable)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None if the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_simulated_board_files_import_each_other_without_cycles():
    graph = import_graph()
    kept = {a: {b for b in deps if (a, b) not in ALIAS_EDGES} for a, deps in graph.items()}
    cycle = find_cycle(kept)
    assert cycle is None, "import cycle among simulated_boards/ files: " + " -> ".join(cycle)


def test_the_alias_cycle_is_still_there_and_all_of_it_is_listed():
    # Each allowed edge must exist (else the allowance outlives its reason), and _simboot must
    # import the module that imports it back.
    graph = import_graph()
    for a, b in sorted(ALIAS_EDGES):
        assert b in graph[a], f"{a} no longer imports {b}: remove it from ALIAS_EDGES"
        assert a in graph[b], f"{b} no longer imports {a}: remove ({a!r}, {b!r}) from ALIAS_EDGES"


def test_the_graph_sees_top_level_function_level_and_part_file_imports():
    graph = import_graph()
    assert {"_simbus", "_simpins", "_simboot"} <= graph["machine"]   # top level, `from x import`
    assert "_simparts" in graph["_siminputs"]                         # inside a function
    assert graph["devices/bme280"] == {"_simclock"}                   # a part file
    assert "json" not in graph["_simcore"] and "sys" not in graph["_simboot"]  # port modules


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def private_reaches(root: Path = SIM_ROOT) -> list[str]:
    """Where a file uses another simulated_boards module's underscore names: `other._name`
    (also through `import other as o` or `o = other`) or `from other import _name`."""
    graph = import_graph(root)
    offences = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        local = {}  # name bound in this file -> simulated_boards module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in graph:
                        local[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in graph:
                offences += [f"{path.name}: from {node.module} import {a.name}" for a in node.names
                             if a.name.startswith("_")]
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and \
                    len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.value.id in local:
                    local[node.targets[0].id] = local[node.value.id]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id in local and node.attr.startswith("_") and \
                    not node.attr.startswith("__") and local[node.value.id] != _node(path, root):
                offences.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return offences


def test_no_file_reaches_into_another_modules_underscore_names():
    # The house rule holds on the device side too: each module offers public names for what
    # the others need.
    offences = private_reaches()
    assert not offences, "reaching into another module's private names:\n" + "\n".join(offences)


def host_import_graph() -> dict[str, set[str]]:
    """harness/sim module -> the harness/sim modules it imports (TYPE_CHECKING blocks too)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(HOST_SIM.glob("*.py")):
        deps = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(alias.name for alias in node.names)
    return graph


def test_the_host_end_imports_without_cycles_and_the_handles_never_import_the_simulator():
    graph = host_import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in harness/sim: " + " -> ".join(cycle)
    # The handles reach the simulator only through InputState and the SimulatorView protocol.
    assert "simulator" not in graph["inputs"] and "simulator" not in graph["inputstate"]
    inputs = ast.parse((HOST_SIM / "inputs.py").read_text())
    private = [f"line {n.lineno}: sim.{n.attr}" for n in ast.walk(inputs)
               if isinstance(n, ast.Attribute) and n.attr.startswith("_")
               and isinstance(n.value, ast.Attribute) and n.value.attr == "sim"]
    assert not private, "inputs.py reaches into the simulator's private state: " + ", ".join(private)
