"""Mutation operators: the bugs firmware ships with, planted one at a time in its source.

Each operator finds its sites with `ast` and makes its change as an edit of the source text, so a
mutant differs from the original in exactly the characters it changes: comments, layout and
everything around the site are kept, and its diff reads like the one-line bug it models.

    boundary            a comparison's boundary moved: < and <=, > and >= swapped
    negate-comparison   == and !=, is and is not, in and not in swapped
    negate-condition    an if / elif / while / conditional expression's test negated
    constant            an integer off by one (n+1); a decimal number x1000 (a unit mixed up:
                        ms for s, mV for V), except shift counts, bit masks and indices
    flag                True and False swapped (retain, clean_session, any flag); qos 0 and 1
    remove-call         a call statement removed (a forgotten feed(), commit(), close());
                        print() calls are left alone: a log line is not behaviour
    remove-statement    an assignment, del, raise, return, break or continue removed
    swallow-exception   an except clause's body replaced by `pass`: the error is ignored
    narrow-except       one type dropped from `except (A, B)`: that error now escapes
    swap-ends           the other end of a list: pop(0) and pop(), [0] and [-1], append(x)
                        and insert(0, x), [:n] and [n:]

Only code inside functions loses statements (a module-level removal is an import error, caught by
any test); constants and flags are mutated everywhere, module-level settings included.
Nothing inside print() arguments or f-strings is mutated.

A mutant's id is `PATH:SCOPE:OPERATOR:HASH`: the file, the function or class it is in, and a hash
of what it changes (the text before and after, the line it is on, and which occurrence of all
that in the scope it is). Edits elsewhere in the file leave an id alone; a change on the mutated
line makes new mutants.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass
from ..errors import HarnessError

OPERATORS = {
    "boundary": "a comparison's boundary moved (< and <=, > and >=)",
    "negate-comparison": "== and !=, is and is not, in and not in swapped",
    "negate-condition": "an if/elif/while/conditional test negated",
    "constant": "an integer off by one, or a number x1000",
    "flag": "True and False swapped (retain, clean_session, ...); qos 0 and 1",
    "remove-call": "a call statement removed",
    "remove-statement": "an assignment, del, raise, return, break or continue removed",
    "swallow-exception": "an except clause's body replaced by pass",
    "narrow-except": "one exception type dropped from an except tuple",
    "swap-ends": "the other end of a list (pop(0)/pop(), [0]/[-1], append/insert(0), [:n]/[n:])",
}

_BOUNDARY = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}
_NEGATED = {"==": "!=", "!=": "==", "is": "is not", "is not": "is", "in": "not in", "not in": "in"}
_COMPARISON = re.compile(rb"not\s+in\b|is\s+not\b|<=|>=|==|!=|<|>|in\b|is\b")
_ATOMS = (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant)
_REMOVABLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete, ast.Raise, ast.Return, ast.Break,
              ast.Continue)


@dataclass(frozen=True)
class Mutant:
    """One planted bug: `original` replaced by `replacement` at bytes start..end of one file."""

    id: str
    path: str           # the file, relative to the firmware folder ("app.py", "../common/lib/link.py")
    operator: str
    scope: str          # "Station.take_reading", or "<module>"
    line: int
    start: int          # byte offsets in the file's UTF-8 text
    end: int
    original: str
    replacement: str

    @property
    def description(self) -> str:
        return f"{self.operator}: {_short(self.original)} -> {_short(self.replacement)}"

    def apply(self, source: str) -> str:
        """The mutated text of the file; HarnessError if the file is not the one mutated."""
        data = source.encode()
        if data[self.start:self.end] != self.original.encode():
            raise HarnessError(f"{self.path}: changed since mutant {self.id} was made (line {self.line} "
                               f"no longer holds {_short(self.original)!r}); make the mutants again")
        return (data[:self.start] + self.replacement.encode() + data[self.end:]).decode()


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def mutants_of(source: str, path: str, operators: set[str] | None = None) -> list[Mutant]:
    """Every mutant of one file's source (`path` names it in ids and diffs), in source order.

    `operators`: the operator names to use (default: all). HarnessError naming the file and line
    if it is not valid Python."""
    unknown = set(operators or ()) - set(OPERATORS)
    if unknown:
        raise HarnessError(f"unknown mutation operator(s) {', '.join(sorted(unknown))} "
                           f"(known: {', '.join(OPERATORS)})")
    try:
        tree = ast.parse(source, path)
    except SyntaxError as e:
        raise HarnessError(f"{path}:{e.lineno}: not valid Python, cannot mutate it ({e.msg})") from None
    finder = _Finder(source.encode(), set(operators or OPERATORS))
    finder.visit(tree)
    mutants, seen, made = [], {}, set()
    for operator, scope, line, start, end, replacement in sorted(finder.edits, key=lambda e: (e[3], e[4], e[0])):
        original = finder.data[start:end].decode()
        if original == replacement or (start, end, replacement) in made:
            continue  # no change, or the same change another operator made already
        made.add((start, end, replacement))
        mutated = finder.data[:start] + replacement.encode() + finder.data[end:]
        try:
            ast.parse(mutated, path)
        except SyntaxError:  # an edit this module got wrong: never run a mutant that cannot load
            continue
        # The site's whole line(s) too: a change there makes a new mutant, a change elsewhere does not.
        first = finder.data.rfind(b"\n", 0, start) + 1
        last = finder.data.find(b"\n", end)
        context = " ".join(finder.data[first:last if last >= 0 else len(finder.data)].decode().split())
        key = (scope, operator, original, replacement, context)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        digest = hashlib.sha256(repr((*key, occurrence)).encode()).hexdigest()[:8]
        mutants.append(Mutant(f"{path}:{scope}:{operator}:{digest}", path, operator, scope, line, start, end,
                              original, replacement))
    return mutants


class _Finder(ast.NodeVisitor):
    """Walks a module and records each operator's edits: (operator, scope, line, start, end, text)."""

    def __init__(self, data: bytes, operators: set[str]):
        self.data = data
        self.operators = operators
        self.edits: list[tuple[str, str, int, int, int, str]] = []
        self.scope: list[str] = []
        self.in_function = 0
        self.bit_operands: set[int] = set()  # ids of shift counts and bitwise operands
        self.first_bindings: set[int] = set()  # ids of assignments that first bind a local name
        self.line_starts = [0]
        for line in data.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))

    # -- positions ---------------------------------------------------------------------------
    def start(self, node: ast.AST) -> int:
        return self.line_starts[node.lineno - 1] + node.col_offset

    def end(self, node: ast.AST) -> int:
        return self.line_starts[node.end_lineno - 1] + node.end_col_offset

    def text(self, node: ast.AST) -> str:
        return self.data[self.start(node):self.end(node)].decode()

    def add(self, operator: str, node: ast.AST, start: int, end: int, replacement: str) -> None:
        if operator in self.operators:
            scope = ".".join(self.scope) or "<module>"
            self.edits.append((operator, scope, node.lineno, start, end, replacement))

    def replace(self, operator: str, node: ast.AST, replacement: str) -> None:
        self.add(operator, node, self.start(node), self.end(node), replacement)

    # -- scopes and what is left alone ----------------------------------------------------------
    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)  # default values are evaluated where the def is
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.scope.append(node.name)
        self.in_function += 1
        self.first_bindings |= _first_bindings(node)
        for stmt in node.body:
            self.visit(stmt)
        self.in_function -= 1
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        pass  # f-strings: positions inside them are unreliable, and they are messages

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "print":
            return  # a log line's arguments are not behaviour
        self.swap_ends_call(node)
        for kw in node.keywords:
            if kw.arg == "qos" and isinstance(kw.value, ast.Constant) and type(kw.value.value) is int:
                flipped = {0: 1, 1: 0, 2: 1}.get(kw.value.value)
                if flipped is not None:
                    self.replace("flag", kw.value, str(flipped))
        self.visit(node.func)
        for arg in node.args:
            self.visit(arg)
        for kw in node.keywords:
            if not (kw.arg == "qos" and isinstance(kw.value, ast.Constant)):
                self.visit(kw.value)

    # -- statements --------------------------------------------------------------------------
    def visit_Expr(self, node: ast.Expr) -> None:
        value = node.value
        if self.in_function and isinstance(value, ast.Call) and not (
                isinstance(value.func, ast.Name) and value.func.id == "print"):
            self.replace("remove-call", node, "pass")
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return  # a docstring
        self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        if self.in_function and isinstance(node, _REMOVABLE) and id(node) not in self.first_bindings:
            self.replace("remove-statement", node, "pass")
        super().generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if not _is_main_guard(node.test):
            self.negate(node.test)
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        if isinstance(node.test, ast.Constant) and node.test.value is True:
            for stmt in [*node.body, *node.orelse]:  # `while True` is an idiom, not a flag
                self.visit(stmt)
            return
        self.negate(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.negate(node.test)
        self.generic_visit(node)

    def negate(self, test: ast.expr) -> None:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            inner = self.text(test.operand)
            self.replace("negate-condition", test, inner if isinstance(test.operand, _ATOMS) else f"({inner})")
        else:
            inner = self.text(test)
            self.replace("negate-condition", test, f"not {inner}" if isinstance(test, _ATOMS) else f"not ({inner})")

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        body = node.body
        if not (len(body) == 1 and isinstance(body[0], ast.Pass)):
            self.add("swallow-exception", node, self.start(body[0]), self.end(body[-1]), "pass")
        if isinstance(node.type, ast.Tuple) and len(node.type.elts) > 1:
            names = [self.text(e) for e in node.type.elts]
            for i in range(len(names)):
                rest = names[:i] + names[i + 1:]
                self.replace("narrow-except", node.type, f"({', '.join(rest)})" if len(rest) > 1 else rest[0])
        self.generic_visit(node)

    # -- expressions -------------------------------------------------------------------------
    def visit_Compare(self, node: ast.Compare) -> None:
        left = node.left
        for op_node, right in zip(node.ops, node.comparators):
            found = self.operator_between(left, right)
            if found is not None:
                start, end, op = found
                if op in _BOUNDARY:
                    self.add("boundary", node, start, end, _BOUNDARY[op])
                elif op in _NEGATED:
                    self.add("negate-comparison", node, start, end, _NEGATED[op])
            left = right
        self.generic_visit(node)

    def operator_between(self, left: ast.AST, right: ast.AST) -> tuple[int, int, str] | None:
        """The comparison operator's bytes between two operands: (start, end, normalised text)."""
        i, stop = self.end(left), self.start(right)
        data = self.data
        while i < stop:
            c = data[i:i + 1]
            if c in (b" ", b"\t", b"\r", b"\n", b"\\", b"(", b")"):
                i += 1
            elif c == b"#":
                while i < stop and data[i:i + 1] != b"\n":
                    i += 1
            else:
                match = _COMPARISON.match(data, i, stop)
                if match is None:
                    return None
                return match.start(), match.end(), " ".join(match.group().decode().split())
        return None

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if type(value) is bool:
            self.replace("flag", node, str(not value))
        elif type(value) is int:
            text = self.text(node)
            self.replace("constant", node, _like(text, value + 1))
            if value and text.isdigit() and id(node) not in self.bit_operands:
                self.replace("constant", node, str(value * 1000))
        elif type(value) is float and value:
            self.replace("constant", node, repr(value * 1000))

    def visit_BinOp(self, node: ast.BinOp) -> None:
        # x1000 models a unit mix-up (ms for s, mV for V): not for a shift count or a mask.
        if isinstance(node.op, (ast.LShift, ast.RShift)):
            self.bit_operands.add(id(node.right))
        elif isinstance(node.op, (ast.BitAnd, ast.BitOr, ast.BitXor)):
            self.bit_operands.update((id(node.left), id(node.right)))
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        index = node.slice
        self.bit_operands.add(id(index))  # an index x1000 is no unit mix-up either
        if _int_value(index) == 0:
            self.replace("swap-ends", index, "-1")
        elif _int_value(index) == -1:
            self.replace("swap-ends", index, "0")
        elif isinstance(index, ast.Slice) and index.step is None and (index.lower is None) != (index.upper is None):
            opening = self.data.index(b"[", self.end(node.value))
            closing = self.end(node) - 1
            if self.data[closing:closing + 1] == b"]":
                bound = self.text(index.lower or index.upper)
                self.add("swap-ends", node, opening + 1, closing, f"{bound}:" if index.lower is None else f":{bound}")
        self.generic_visit(node)

    def swap_ends_call(self, node: ast.Call) -> None:
        func = node.func
        if not isinstance(func, ast.Attribute) or node.keywords:
            return
        name_start = self.end(func) - len(func.attr)
        if func.attr == "pop" and len(node.args) == 1 and _int_value(node.args[0]) == 0:
            self.add("swap-ends", node, name_start, self.end(node), "pop()")
        elif func.attr == "pop" and (not node.args or (len(node.args) == 1 and _int_value(node.args[0]) == -1)):
            self.add("swap-ends", node, name_start, self.end(node), "pop(0)")
        elif func.attr == "append" and len(node.args) == 1:
            self.add("swap-ends", node, name_start, self.end(node), f"insert(0, {self.text(node.args[0])})")


def _first_bindings(func: ast.FunctionDef | ast.AsyncFunctionDef) -> set[int]:
    """Assignments that bind local names for the first time in the function's text: removing
    one only makes a NameError, a crash any test sees, not a bug worth a mutant."""
    a = func.args
    params = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x is not None}
    stores: dict[str, tuple[int, int]] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            at = (node.lineno, node.col_offset)
            stores[node.id] = min(stores.get(node.id, at), at)
    found = set()
    for node in ast.walk(func):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n for t in targets for n in ast.walk(t)]
            if all(isinstance(n, (ast.Name, ast.Tuple, ast.List, ast.Store, ast.Load)) for n in names):
                bound = [n.id for n in names if isinstance(n, ast.Name)]
                if bound and all(n not in params and stores[n] >= (node.lineno, node.col_offset) for n in bound):
                    found.add(id(node))
    return found


def _int_value(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _int_value(node.operand) is not None:
        return -_int_value(node.operand)
    return None


def _like(text: str, value: int) -> str:
    """`value` written in the base of the literal `text` (0x0F -> 0x10)."""
    prefix = text[:2].lower()
    if prefix == "0x":
        digits = f"{value:x}"
        return text[:2] + (digits.upper() if any(c in "ABCDEF" for c in text[2:]) else digits)
    if prefix == "0b":
        return text[:2] + f"{value:b}"
    if prefix == "0o":
        return text[:2] + f"{value:o}"
    return str(value)


def _is_main_guard(test: ast.expr) -> bool:
    return isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
