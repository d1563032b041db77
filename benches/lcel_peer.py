"""Peer for benches/chain.rs: LangChain LCEL `RunnableLambda | RunnableLambda | RunnableLambda` invoke time.

Usage: python3 benches/lcel_peer.py [ITERATIONS] [--record]

With `--record`, every invoke runs with a callback handler that records each run's start (name, inputs) and end
(outputs) into a list: LangChain's counterpart of the recording `tracing` subscriber in benches/chain.rs.

Prints one JSON object: {"per_invoke_ns": float, "iterations": int, "result": int, "events": int}.
"""
import json
import sys
import time

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda


class Recorder(BaseCallbackHandler):
    """Records every chain run's start and end, with their values."""

    def __init__(self):
        self.events = []

    def on_chain_start(self, serialized, inputs, *, run_id, **kwargs):
        self.events.append(("start", run_id, kwargs.get("name"), inputs))

    def on_chain_end(self, outputs, *, run_id, **kwargs):
        self.events.append(("end", run_id, outputs))


args = [a for a in sys.argv[1:] if not a.startswith("--")]
record = "--record" in sys.argv[1:]
iterations = int(args[0]) if args else 2000
chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(lambda x: x * 2) | RunnableLambda(lambda x: x - 3)
recorder = Recorder()
config = {"callbacks": [recorder]} if record else None
for _ in range(100):  # warm-up
    chain.invoke(1, config)
recorder.events.clear()
start = time.perf_counter()
total = 0
for i in range(iterations):
    total += chain.invoke(i, config)
elapsed = time.perf_counter() - start
expected = sum((i + 1) * 2 - 3 for i in range(iterations))
assert total == expected, f"LCEL computed {total}, expected {expected}"
# The sequence and its three steps: a start and an end each per invoke.
assert not record or len(recorder.events) == 8 * iterations, len(recorder.events)
print(
    json.dumps(
        {
            "per_invoke_ns": elapsed / iterations * 1e9,
            "iterations": iterations,
            "result": total,
            "events": len(recorder.events),
        }
    )
)
