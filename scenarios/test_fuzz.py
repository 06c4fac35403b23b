"""Fuzz scenarios: the home node's command topic under property-based fuzzing (see harness/fuzz.py).

A short run stays in the default suite; the long run (10,000 examples, each a batch of
payloads) is marked `fuzz` and runs with --fuzz-long or -m fuzz. Failures are stored in
.hypothesis/fuzz and replayed first on the next run.
"""

import pytest

pytestmark = pytest.mark.firmware("firmware_under_test/home_automation")


def test_short_fuzz_run_leaves_the_home_node_answering(fuzzer):
    stats = fuzzer.run(examples=25)  # a few seconds
    assert stats.payloads >= 25 and stats.resets == 0, stats
    # Alive and obeying after the run: a valid command takes effect (reply and relay pin).
    fuzzer.check([b'{"id": "after", "op": "set", "relay": 0, "state": true}'])


@pytest.mark.fuzz
def test_home_node_survives_ten_thousand_examples(fuzzer):
    stats = fuzzer.run(examples=10_000)
    print(f"\nfuzz run: {stats}")
    assert stats.resets == 0, stats
