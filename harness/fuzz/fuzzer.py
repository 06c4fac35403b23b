"""Property-based fuzzing of a running firmware's command topic, through the broker.

`Fuzzer` starts the firmware, then `check(payloads)` publishes a batch of payloads (QoS 0, so a
payload that kills the board is not redelivered to its successor) followed by a liveness ping,
and matches the replies in order (one reply per command, in order, is the contract). The
oracle (fuzz_oracle.Contract) judges each reply; a dead, hung or tracebacking board is reset
and started again before the failure is raised, so hypothesis can go on shrinking. `run()`
drives hypothesis over batches of payloads, with a directory example database so a failure
found once is replayed first next time; it reports progress as it goes (progress.py: a line
every `progress_every` seconds) and records hypothesis events (a failure's kind, a board reset)
for --hypothesis-show-statistics.

    fuzzer = Fuzzer(board, Firmware("firmware_under_test/home_automation"), broker)
    fuzzer.start()
    stats = fuzzer.run(examples=200, seed=1)
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hypothesis import event, strategies as st

from ..board.board import Board
from ..deploy.device_config import build_config
from ..errors import BoardError, HarnessError
from ..deploy.firmware import Firmware
from .oracle import Contract, RelayModel
from ..errors import FuzzBadReply, FuzzCrash, FuzzFailure, FuzzHang, FuzzWrongReply
from .progress import DEFAULT_EVERY_S, Progress
from .runner import run_property
from .strategies import payloads

TRACEBACK = "Traceback (most recent call last)"
DEFAULT_DATABASE = Path(".hypothesis") / "fuzz"
_ids = itertools.count(1)
_MORE = st.integers(0, 15).map(bool)  # another payload in this batch? (15 in 16: ~16 a batch)


@dataclass
class FuzzStats:
    """What a run did: examples (hypothesis test cases), payloads checked, resets, heap readings."""

    examples: int = 0
    payloads: int = 0
    resets: int = 0
    reset_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    heap: list[int] = field(default_factory=list)

    @property
    def payloads_per_s(self) -> float:
        return self.payloads / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        heap = f", heap free {self.heap[0]}..{self.heap[-1]} B" if self.heap else ""
        return (f"{self.examples} examples, {self.payloads} payloads in {self.seconds:.1f} s "
                f"({self.payloads_per_s:.0f}/s), {self.resets} resets{heap}")


def contract_for(firmware: Firmware, **overrides: Any) -> Contract:
    """The fuzzing contract of a firmware from its schemas/command.json and schemas/reply.json.

    home_automation gets its relay model and its 512-byte command limit by default."""
    defaults: dict[str, Any] = {}
    if firmware.name == "home_automation":
        defaults = {"max_bytes": 512, "model": RelayModel()}
    defaults.update(overrides)
    return Contract(firmware.schema("command"), firmware.schema("reply"), **defaults)


class Fuzzer:
    """One firmware on one board, fed payloads on its command topic and judged by its replies."""

    def __init__(self, board: Board, firmware: Firmware, broker: Any, contract: Contract | None = None,
                 client_id: str | None = None, timeout: float = 3.0, ready_timeout: float = 15.0,
                 extra: dict | None = None, leak_budget: int = 32768, examples: int = 100,
                 seed: int | None = None, batch: int = 32, database: str | Path | None = DEFAULT_DATABASE,
                 progress_every: float = DEFAULT_EVERY_S):
        self.board, self.firmware, self.broker = board, firmware, broker
        self.contract = contract or contract_for(firmware)
        self.client_id = client_id or f"fuzz-{next(_ids)}"
        self.prefix = f"hil/{self.client_id}"
        self.timeout, self.ready_timeout, self.extra = timeout, ready_timeout, extra
        self.leak_budget = leak_budget
        # run()'s defaults (the pytest options --fuzz-examples, --fuzz-seed, ... set them)
        self.examples, self.seed, self.batch_size, self.database = examples, seed, batch, database
        self.progress_every = progress_every  # seconds between run()'s progress lines
        self.stats = FuzzStats()
        self._cmd = f"{self.prefix}/{self.contract.cmd_topic}"
        self._reply = f"{self.prefix}/{self.contract.reply_topic}"
        self._status = f"{self.prefix}/status"
        self._replies: list[bytes] = []
        self._online = 0
        self._cond = threading.Condition()
        self._client = None
        self._run = None
        self._sentinels = itertools.count(1)
        self._boot_heap: list[int] = []
        self._unfinished = False  # payloads were sent in a batch that was never judged

    # -- lifecycle ---------------------------------------------------------------------------
    def _record(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool, client_id: str | None) -> None:
        if topic == self._reply:
            with self._cond:
                self._replies.append(payload)
                self._cond.notify_all()
        elif topic == self._status and payload == b"online" and client_id in (None, self.client_id):
            with self._cond:
                self._online += 1
                self._cond.notify_all()

    def start(self) -> "Fuzzer":
        """Deploy the firmware with a config naming the broker, run it, wait until it is online."""
        self.broker.add_listener(self._record)
        self._client = self.broker.client(client_id=f"{self.client_id}-host")
        cfg = build_config(self.broker, self.client_id, topic_prefix=self.prefix, extra=self.extra)
        self.firmware.deploy(self.board, cfg)
        self._boot()
        return self

    def _boot(self) -> None:
        with self._cond:
            online = self._online
        self._run = self.board.run("main.py")
        with self._cond:
            if not self._cond.wait_for(lambda: self._online > online or not self._run.running, self.ready_timeout):
                raise HarnessError(f"{self.board.name}: firmware {self.firmware.name} did not come online on "
                                   f"{self._status} within {self.ready_timeout:g} s; console tail:\n"
                                   f"{self.board.console.tail()}")
        if not self._run.running:
            raise HarnessError(f"{self.board.name}: firmware {self.firmware.name} stopped while starting: "
                               f"{self._run.error}\n{self.board.console.tail()}")
        self._boot_heap = []
        if self.contract.model is not None:
            status = self._roundtrip(self.contract.status)
            if status is not None:
                self.contract.model.sync(json.loads(status))

    def reset(self) -> float:
        """Bring a dead or hung board back: reset it and start the firmware again; seconds taken."""
        began = time.perf_counter()
        self.board.reset()
        self._boot()
        took = time.perf_counter() - began
        self.stats.resets += 1
        self.stats.reset_s.append(took)
        return took

    def close(self) -> None:
        """Stop the firmware and the host client; the board and broker stay (their owners close them)."""
        self.broker.remove_listener(self._record)
        if self._client is not None:
            self._client.close()
            self._client = None
        try:
            self.board.stop()
        except BoardError:
            pass

    def __enter__(self) -> "Fuzzer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- one batch -----------------------------------------------------------------------------
    def _roundtrip(self, make: Any) -> bytes | None:
        """Send one sentinel command (ping/get) and wait for its reply; None if none came."""
        sid = f"fz-{next(self._sentinels)}"
        with self._cond:
            mark = len(self._replies)
        self._client.publish(self._cmd, make(sid), qos=0)
        return self._wait_sentinel(sid, mark)[1]

    def _wait_sentinel(self, sid: str, mark: int) -> tuple[int, bytes | None]:
        """(index of the sentinel's reply, its payload); (-1, None) on timeout or firmware death."""
        needle = f'"{sid}"'.encode()
        deadline = time.monotonic() + self.timeout
        scanned = mark
        with self._cond:
            while True:
                for i in range(scanned, len(self._replies)):
                    if needle in self._replies[i]:
                        return i, self._replies[i]
                scanned = len(self._replies)
                left = deadline - time.monotonic()
                if left <= 0 or not self._run.running:
                    return -1, None
                self._cond.wait(min(left, 0.05))  # wake now and then to notice a dead firmware

    def check(self, payloads: Sequence[bytes]) -> None:
        """Deliver the payloads, then a liveness ping; raise a FuzzFailure for the first problem."""
        batch = self.batch()
        for p in payloads:
            batch.send(p)
        batch.finish()

    def batch(self) -> "Batch":
        """A round of payloads sent one by one (the firmware works while the next is drawn)."""
        if self._unfinished:
            # hypothesis abandoned the last example mid-batch (a draw overran or was rejected):
            # its replies are still coming, and its commands acted. A status round trip flushes
            # the replies and gives the model the board's real state.
            self._unfinished = False
            if self._run is not None and self._run.running and not self._resync():
                self.reset()
        if self._run is None or not self._run.running:
            self.reset()
        return Batch(self)

    def _judge(self, payloads: list[bytes], mark: int, console_mark: int) -> None:
        sid = f"fz-{next(self._sentinels)}"
        self._client.publish(self._cmd, self.contract.ping(sid), qos=0)
        end, pong = self._wait_sentinel(sid, mark)
        with self._cond:
            replies = self._replies[mark:end if end >= 0 else len(self._replies)]
        console = self.board.console.text[console_mark:]
        self.stats.payloads += len(payloads)
        fw = self._fw_path()
        if end < 0 and TRACEBACK not in console and self._run.running and len(replies) > len(payloads):
            # Not a hang: the board answered everything, the ping too, but no reply carries the
            # ping's id. Its replies are wrong (an id lost or changed), so judge them as replies.
            self._judge_replies(payloads, replies, fw)
            extra = replies[len(payloads):]
            problem = self.contract.check_reply(self.contract.ping(sid), extra[0])
            why = problem[1] if problem else f"reply {extra[0][:200]!r} does not carry the ping's id {sid!r}"
            count = f"{len(replies)} replies to {len(payloads)} command(s) and the liveness ping"
            kind = problem[0] if problem else FuzzWrongReply
            raise kind(payloads[-1] if payloads else b"", f"liveness ping: {why} ({count})", payloads, fw)
        if end < 0 or TRACEBACK in console or not self._run.running:
            error = self._run.error
            self.reset()
            culprit, alone = self._isolate(payloads[len(replies):])
            crashed = TRACEBACK in console or error is not None
            how = (f"{error}" if error is not None else "a traceback on the console") if crashed else \
                f"no answer to the liveness ping within {self.timeout:g} s"
            how += f" ({len(replies)} of {len(payloads)} replies came)"
            if not alone:
                how += "; it needs the payloads before it in the batch"
            raise (FuzzCrash if crashed else FuzzHang)(culprit, how, [culprit] if alone else payloads, fw, console)
        if len(replies) != len(payloads):
            culprit = payloads[min(len(replies), len(payloads) - 1)]
            raise FuzzWrongReply(culprit, f"{len(replies)} replies to {len(payloads)} commands "
                                 "(one reply per command is the contract)", payloads, fw)
        self._judge_replies(payloads, replies, fw)
        problem = self.contract.check_reply(self.contract.ping(sid), pong)
        if problem:
            raise FuzzBadReply(payloads[-1] if payloads else b"", f"liveness ping: {problem[1]}", payloads, fw)
        sim = getattr(self.board, "sim", None)
        if self.contract.model is not None and sim is not None and payloads:
            sim.sync()  # the board's pin reports are recorded before its ack
            problem = self.contract.model.check_outputs(sim)
            if problem:
                raise FuzzWrongReply(payloads[-1], problem, payloads, fw)
        heap = self.contract.heap(pong)
        if heap is not None:
            self._boot_heap.append(heap)
            self.stats.heap.append(heap)

    def _judge_replies(self, payloads: list[bytes], replies: list[bytes], fw: str) -> None:
        """Raise for the first payload whose reply breaks the contract (replies matched in order)."""
        for p, r in zip(payloads, replies):
            problem = self.contract.check_reply(p, r)
            if problem:
                # A reply is judged on its own payload (state effects aside): that payload alone
                # is the regression test.
                stateful = self.contract.model is not None and problem[0] is FuzzWrongReply
                raise problem[0](p, problem[1], payloads if stateful else [p], fw)

    def _isolate(self, suspects: list[bytes]) -> tuple[bytes, bool]:
        """Which payload kills the board on its own? Replies queued on the board die with it,
        so the first unanswered payload need not be the one. Each suspect is sent alone to a
        fresh board until one kills it: (that payload, True); (first suspect, False) if none does."""
        if not suspects:
            return b"", False
        if len(suspects) == 1:
            return suspects[0], True
        for p in suspects:
            self._client.publish(self._cmd, p, qos=0)
            if self._roundtrip(self.contract.ping) is None or not self._run.running:
                self.reset()
                return p, True
        return suspects[0], False

    def _resync(self) -> bool:
        """Take the board's real state into the model (after a failure the firmware may have
        acted on later commands); False if the firmware did not answer."""
        if self._run is None or not self._run.running:
            return False
        status = self._roundtrip(self.contract.status if self.contract.model else self.contract.ping)
        if status is None:
            return False
        if self.contract.model is not None:
            self.contract.model.sync(json.loads(status))
        return True

    def _fw_path(self) -> str:
        try:
            return str(self.firmware.path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.firmware.path)

    def leak(self, warmup: int = 5) -> str | None:
        """A description of heap lost since boot (past `leak_budget` bytes), or None."""
        readings = self._boot_heap
        if len(readings) < warmup + 3:
            return None
        base, now = max(readings[:warmup]), max(readings[-3:])
        if base - now > self.leak_budget:
            return (f"free heap fell from {base} to {now} bytes over {len(readings)} batches "
                    f"(budget {self.leak_budget}): a leak across examples")
        return None

    # -- hypothesis ---------------------------------------------------------------------------
    def run(self, examples: int | None = None, seed: int | None = None, batch: int | None = None,
            max_size: int = 1024, database: str | Path | None = "default",
            strategy: st.SearchStrategy | None = None, shrink: bool = True) -> FuzzStats:
        """Run hypothesis: `examples` test cases, each a batch of 1..`batch` payloads (`strategy`:
        of one payload; default fuzz_strategies.payloads of the command schema).

        Failures found before are replayed first from `database` (a directory; None: none).
        Raises the (shrunk) FuzzFailure; afterwards checks the heap did not leak."""
        examples = self.examples if examples is None else examples
        seed = self.seed if seed is None else seed
        batch = self.batch_size if batch is None else batch
        database = self.database if database == "default" else database
        payload = strategy if strategy is not None else payloads(self.contract.command_schema, max_size)
        progress = Progress(f"fuzz {self.firmware.name} on {self.board.name}", "payloads", self.progress_every)

        def fuzz_firmware(data: st.DataObject) -> None:
            # A batch is drawn like hypothesis draws a list (a "more?" choice before each
            # element), so shrinking deletes payloads; each is published as soon as it is drawn.
            self.stats.examples += 1
            resets = self.stats.resets
            round_: Batch | None = None
            status = "invalid"  # unless it ends below: hypothesis gave up drawing (a BaseException)
            try:
                round_ = self.batch()
                round_.send(data.draw(payload, label="payload"))
                while len(round_.payloads) < batch and data.draw(_MORE):
                    round_.send(data.draw(payload, label="payload"))
                round_.finish()
                status = "passing"
            except Exception as e:
                status = "failing"
                event("failure", type(e).__name__)
                raise
            finally:
                if self.stats.resets > resets:
                    event("board reset")
                progress.example(len(round_.payloads) if round_ else 0, status, self.stats.resets - resets)

        # Failures are stored per firmware folder and command schema.
        key = f"harness.fuzz:{self.firmware.path}:{json.dumps(self.contract.command_schema, sort_keys=True)}"
        progress.start(f"up to {examples} examples of 1..{batch} payloads, "
                       + ("random seed" if seed is None else f"seed {seed}"))
        began = time.perf_counter()
        try:
            run_property(fuzz_firmware, examples=examples, seed=seed, database=database, key=key,
                         shrink=shrink, what=progress.what)
        except BaseException as e:
            progress.finish(e)
            raise
        else:
            progress.finish(None)
        finally:
            self.stats.seconds += time.perf_counter() - began
        leak = self.leak()
        if leak:
            raise AssertionError(f"{self.board.name}: firmware {self.firmware.name}: {leak}")
        return self.stats


class Batch:
    """Payloads published as they come (send), judged together after a liveness ping (finish)."""

    def __init__(self, fuzzer: Fuzzer):
        self.fuzzer = fuzzer
        self.payloads: list[bytes] = []
        with fuzzer._cond:
            self._mark = len(fuzzer._replies)
        self._console = len(fuzzer.board.console.text)

    def send(self, payload: bytes) -> None:
        payload = bytes(payload)
        self.payloads.append(payload)
        self.fuzzer._unfinished = True
        self.fuzzer._client.publish(self.fuzzer._cmd, payload, qos=0)

    def finish(self) -> None:
        """Raise a FuzzFailure for the first problem (the board is reset first if it died)."""
        self.fuzzer._unfinished = False
        try:
            self.fuzzer._judge(self.payloads, self._mark, self._console)
        except FuzzFailure:
            self.fuzzer._resync()
            raise
