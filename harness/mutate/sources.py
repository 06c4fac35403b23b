"""A firmware's source tree as mutation testing sees it: the folder, the host folders its manifest
includes (shared code such as ../common/lib) and its local packages; which files are mutated (the
ones the firmware imports); copies of the tree with one file changed.

A copy keeps every folder at the same place relative to the others, so the manifest's relative
includes ("../common/lib") work in the copy unchanged and the firmware folder keeps its name:

    /tmp/hil-mutant-x/weather_station/...      the firmware folder
    /tmp/hil-mutant-x/common/lib/...           what its manifest includes, as "../common/lib"
"""

from __future__ import annotations

import ast
import fnmatch
import os
import shutil
from pathlib import Path

from ..deploy.firmware import HOST_ONLY, Firmware
from ..errors import HarnessError

EQUIVALENT_FILE = "mutants.equivalent.json"
_SKIPPED_NAMES = {"__pycache__", *HOST_ONLY}  # host-only folders (schemas/) hold no firmware code


class FirmwareTree:
    """One firmware folder and every host folder its deploy reads (FirmwareError if it is not one)."""

    def __init__(self, path: str | Path, exclude: tuple[str, ...] = ()):
        self.firmware = Firmware(path)
        self.path = self.firmware.path
        self.name = self.firmware.name
        self.exclude = tuple(exclude)
        local = [spec for spec in self.firmware.packages if spec.startswith((".", "/"))]
        self.roots = _distinct([self.path, *self.firmware.includes, *[(self.path / s).resolve() for s in local]])
        self.mutable_roots = [self.path, *self.firmware.includes]  # local packages are not mutated
        self.base = Path(os.path.commonpath([str(r if r.is_dir() else r.parent) for r in self.roots]))

    def relative(self, file: Path) -> str:
        """A file's name as mutants and diffs show it: relative to the firmware folder."""
        return Path(os.path.relpath(file, self.path)).as_posix()

    def sources(self) -> dict[str, Path]:
        """The MicroPython files mutated: relative name -> path, in name order.

        Only files the firmware imports (from main.py and boot.py, following its imports as the
        board resolves them: its root, then lib/, where the includes land): a module the firmware
        never loads, such as another firmware's code in a shared folder, cannot fail its tests.
        Files matching an `exclude` pattern (fnmatch on the relative name) are left out."""
        board = self.board_files()
        found = {}
        for board_path in _imported(board):
            name = self.relative(board[board_path])
            if not any(fnmatch.fnmatch(name, pattern) for pattern in self.exclude):
                found[name] = board[board_path]
        return dict(sorted(found.items()))

    def board_files(self) -> dict[str, Path]:
        """The MicroPython files of the tree by their path on the board ("app.py", "lib/link.py")."""
        board: dict[str, Path] = {}
        for root, prefix in [(self.path, ""), *[(inc, "lib/") for inc in self.firmware.includes]]:
            for file in sorted(root.rglob("*.py")):
                parts = file.relative_to(root).parts
                if not any(p in _SKIPPED_NAMES or p.startswith(".") for p in parts):
                    board[prefix + "/".join(parts)] = file  # an include wins, as deploy merges it last
        return board

    def files(self) -> list[Path]:
        """Every file a copy holds (what the board and the tests read from this tree)."""
        out = []
        for root in self.roots:
            if root.is_file():
                out.append(root)
                continue
            for file in sorted(root.rglob("*")):
                parts = file.relative_to(root).parts
                if file.is_file() and not any(p in ("__pycache__", EQUIVALENT_FILE) or p.startswith(".")
                                              for p in parts):
                    out.append(file)
        return out

    def copy(self, into: Path, changed: dict[Path, str] | None = None) -> Path:
        """Copy the tree into `into` (same relative layout), with the `changed` files' new text;
        the copied firmware folder."""
        changed = changed or {}
        for file in self.files():
            target = into / file.relative_to(self.base)
            target.parent.mkdir(parents=True, exist_ok=True)
            if file in changed:
                target.write_text(changed[file])
            else:
                shutil.copyfile(file, target)
        return into / self.path.relative_to(self.base)


def _imported(board: dict[str, Path]) -> list[str]:
    """Board paths of the modules main.py and boot.py load, directly or through other modules."""
    def resolve(module: str) -> str | None:
        rel = module.replace(".", "/")
        for candidate in (f"{rel}.py", f"{rel}/__init__.py", f"lib/{rel}.py", f"lib/{rel}/__init__.py"):
            if candidate in board:
                return candidate
        return None

    todo = [p for p in ("boot.py", "main.py") if p in board]
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            tree = ast.parse(board[path].read_text(), path)
        except SyntaxError as e:
            raise HarnessError(f"{board[path]}:{e.lineno}: not valid Python ({e.msg})") from None
        module_path = path[4:] if path.startswith("lib/") else path
        package = module_path.rsplit("/", 1)[0].replace("/", ".") if "/" in module_path else ""
        names: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                parts = package.split(".") if package else []
                base_parts = parts[:len(parts) - (node.level - 1)] if node.level else []
                base = ".".join(base_parts + ([node.module] if node.module else []))
                names += [base] + [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
        for name in names:
            pieces = name.split(".")
            for i in range(1, len(pieces) + 1):  # `import a.b` loads a, then a.b
                found = resolve(".".join(pieces[:i]))
                if found is not None:
                    todo.append(found)
    return sorted(seen)


def _distinct(paths: list[Path]) -> list[Path]:
    """Paths without duplicates or ones inside another (a folder covers what it holds)."""
    out: list[Path] = []
    for p in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return out
