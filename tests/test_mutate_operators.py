"""The mutation operators on small sources: each plants the bug it models, and nothing else."""

from __future__ import annotations

import ast
import textwrap

import pytest

from micropython_hil.errors import HarnessError
from micropython_hil.mutate import OPERATORS, mutants_of


def changes(source: str, operator: str) -> list[tuple[str, str]]:
    """(original, replacement) of each mutant one operator makes of `source`."""
    return [(m.original, m.replacement) for m in mutants_of(textwrap.dedent(source), "app.py", {operator})]


def test_boundary_moves_each_ordering_comparison():
    assert changes("def f(a, b):\n    return a < b <= 3 or a > 1 or b >= 2\n", "boundary") == [
        ("<", "<="), ("<=", "<"), (">", ">="), (">=", ">")]
    assert changes("def f(a, b):\n    return a == b\n", "boundary") == []


def test_negate_comparison_swaps_equality_identity_and_membership():
    found = changes("""
        def f(a, b):
            return a == b or a != 1 or a is None or b is not None or a in b or a not in b
        """, "negate-comparison")
    assert found == [("==", "!="), ("!=", "=="), ("is", "is not"), ("is not", "is"), ("in", "not in"),
                     ("not in", "in")]


def test_negate_condition_negates_if_elif_while_and_ternary_tests():
    found = changes("""
        def f(ready, n):
            if ready:
                pass
            elif not ready:
                pass
            while n > 0:
                n -= 1
            while True:
                break
            return 1 if ready else 2
        """, "negate-condition")
    assert found == [("ready", "not ready"), ("not ready", "ready"), ("n > 0", "not (n > 0)"),
                     ("ready", "not ready")]


def test_constant_off_by_one_and_times_a_thousand_where_it_is_a_unit():
    found = changes("""
        TIMEOUT_MS = 1000
        def f(x, b):
            return x[0] + (b >> 4) + (b & 0x0F) + 0 + 0.5
        """, "constant")
    assert found == [("1000", "1001"), ("1000", "1000000"),   # a magnitude: off by one, and a unit mixed up
                     ("0", "1"),                               # an index: off by one only
                     ("4", "5"),                               # a shift count: off by one only
                     ("0x0F", "0x10"),                         # a mask, in its own base
                     ("0", "1"),                               # zero: x1000 is no change
                     ("0.5", "500.0")]                         # a float: x1000


def test_flag_flips_booleans_and_qos():
    found = changes("""
        def connect(client, t):
            client.connect(clean_session=False)
            client.publish(t, b"online", retain=True, qos=1)
            client.subscribe(t, qos=0)
            while True:
                break
        """, "flag")
    assert found == [("False", "True"), ("True", "False"), ("1", "0"), ("0", "1")]


def test_remove_call_removes_call_statements_but_not_log_lines():
    found = changes("""
        setup()
        def loop(wdt, nvs):
            wdt.feed()
            print("fed", wdt.feed())
            nvs.commit()
        """, "remove-call")
    assert found == [("wdt.feed()", "pass"), ("nvs.commit()", "pass")]


def test_remove_statement_spares_first_bindings_and_module_level():
    found = changes("""
        LIMIT = 3
        def f(self, items, n):
            total = 0
            total = n
            self.count = n
            n += 1
            del items[0]
            for x in items:
                if x:
                    break
                continue
            if n:
                raise ValueError(n)
            return total
        """, "remove-statement")
    assert [a for a, _ in found] == ["total = n", "self.count = n", "n += 1", "del items[0]", "break",
                                     "continue", "raise ValueError(n)", "return total"]
    assert all(b == "pass" for _, b in found)


def test_swallow_and_narrow_exceptions():
    source = """
        def f(link):
            try:
                link.send()
            except (OSError, ValueError) as e:
                link.drop(e)
                return False
            try:
                link.close()
            except OSError:
                pass
        """
    assert changes(source, "swallow-exception") == [("link.drop(e)\n        return False", "pass")]
    assert changes(source, "narrow-except") == [("(OSError, ValueError)", "ValueError"),
                                                ("(OSError, ValueError)", "OSError")]


def test_swap_ends_takes_the_other_end_of_a_list():
    found = changes("""
        def f(q, batches, n, r):
            q.pop(0)
            q.pop()
            head = q[0]
            tail = q[-1]
            q.append(r)
            del batches[:-n]
        """, "swap-ends")
    assert found == [("pop(0)", "pop()"), ("pop()", "pop(0)"), ("0", "-1"), ("-1", "0"),
                     ("append(r)", "insert(0, r)"), (":-n", "-n:")]


def test_a_mutant_changes_only_its_site_and_keeps_comments_and_layout():
    source = "def f(a):\n    # the threshold, in mV\n    return a  >   2500  # inclusive?\n"
    for m in mutants_of(source, "app.py"):
        mutated = m.apply(source)
        ast.parse(mutated)
        assert mutated.replace(m.replacement, m.original, 1) == source or m.original in source
        assert "# the threshold, in mV" in mutated and "# inclusive?" in mutated
    assert "    return a  >=   2500  # inclusive?\n" in {m.apply(source).splitlines(True)[2]
                                                         for m in mutants_of(source, "app.py", {"boundary"})}


def test_nothing_inside_print_or_fstrings_is_mutated():
    source = 'def f(x):\n    print("x", x > 1, 2)\n    return f"{x > 1} {3}"\n'
    assert mutants_of(source, "app.py", {"boundary", "constant", "negate-comparison"}) == []


def test_ids_survive_edits_elsewhere_and_change_with_the_site():
    before = "def f(a):\n    return a > 1\n"
    after_elsewhere = "import time\n\n\ndef g():\n    pass\n\n\ndef f(a):\n    return a > 1\n"
    at_the_site = "def f(a):\n    return a > 2\n"
    ids = {m.id for m in mutants_of(before, "app.py")}
    assert ids == {m.id for m in mutants_of(after_elsewhere, "app.py") if ":f:" in m.id}
    assert not ids & {m.id for m in mutants_of(at_the_site, "app.py")}
    assert all(m.id.startswith("app.py:f:") for m in mutants_of(before, "app.py"))
    twice = mutants_of("def f(a, b):\n    return a > 1 and b > 1\n", "app.py", {"boundary"})
    assert len({m.id for m in twice}) == 2  # the same change at two sites: two ids


def test_apply_refuses_a_file_that_changed_and_bad_source_is_named():
    m = mutants_of("def f(a):\n    return a > 1\n", "app.py", {"boundary"})[0]
    with pytest.raises(HarnessError, match="changed since mutant"):
        m.apply("def f(a):\n    return a == 1\n")
    with pytest.raises(HarnessError, match=r"app.py:1: not valid Python"):
        mutants_of("def f(:\n  pass\n", "app.py")
    with pytest.raises(HarnessError, match="unknown mutation operator"):
        mutants_of("x = 1\n", "app.py", {"nonsense"})


def test_every_operator_is_documented_and_the_reference_firmware_mutates_cleanly():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "firmware_under_test"
    seen = set()
    for path in sorted(root.glob("*/app.py")):
        source = path.read_text()
        for m in mutants_of(source, path.name):
            ast.parse(m.apply(source))
            seen.add(m.operator)
    assert seen == set(OPERATORS)
