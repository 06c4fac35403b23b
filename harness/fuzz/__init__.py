"""Property-based fuzzing of a firmware's messages: payload strategies from its JSON Schemas,
the oracle judging its replies, the fuzzer driving a running board through the broker, and
differential runs of a board function against a CPython reference."""

from .differential import Differential
from .fuzzer import Batch, FuzzStats, Fuzzer, contract_for
from .oracle import GARBAGE, INVALID, VALID, Contract, Model, RelayModel, StrictValidator
from .runner import example_database, run_property
from .schema_strategies import schema_values
from .strategies import batches, encode, encoded, mutated_messages, payloads, raw_payloads, valid_messages

__all__ = ["GARBAGE", "INVALID", "VALID", "Batch", "Contract", "Differential", "FuzzStats", "Fuzzer", "Model",
           "RelayModel", "StrictValidator", "batches", "contract_for", "encode", "encoded", "example_database",
           "mutated_messages", "payloads", "raw_payloads", "run_property", "schema_values", "valid_messages"]
