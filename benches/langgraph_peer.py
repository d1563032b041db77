"""Peer for benches/chain.rs: a LangGraph 3-node `StateGraph` (`x + 1`, `* 2`, `- 3`, START -> a -> b -> c -> END)
compiled without a checkpointer, `invoke`d with `{"x": i}`.

Usage: python3 benches/langgraph_peer.py [ITERATIONS] [--record]   (needs `pip install langgraph`)

With `--record`, every invoke runs with a callback handler that records each run's start (name, inputs) and end
(outputs) into a list: LangGraph's counterpart of the recording `tracing` subscriber in benches/chain.rs.

Prints one JSON object: {"per_invoke_ns": float, "iterations": int, "result": int, "events": int}.
"""
import json
import sys
import time
from typing import TypedDict

from langchain_core.callbacks import BaseCallbackHandler
from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    x: int


class Recorder(BaseCallbackHandler):
    """Records every run's start and end (the graph, its nodes and their internal writers), with their values."""

    def __init__(self):
        self.events = []

    def on_chain_start(self, serialized, inputs, *, run_id, **kwargs):
        self.events.append(("start", run_id, kwargs.get("name"), inputs))

    def on_chain_end(self, outputs, *, run_id, **kwargs):
        self.events.append(("end", run_id, outputs))


def add(state: State) -> State:
    return {"x": state["x"] + 1}


def double(state: State) -> State:
    return {"x": state["x"] * 2}


def sub(state: State) -> State:
    return {"x": state["x"] - 3}


args = [a for a in sys.argv[1:] if not a.startswith("--")]
record = "--record" in sys.argv[1:]
iterations = int(args[0]) if args else 1000
builder = StateGraph(State)
builder.add_node("add", add)
builder.add_node("double", double)
builder.add_node("sub", sub)
builder.add_edge(START, "add")
builder.add_edge("add", "double")
builder.add_edge("double", "sub")
builder.add_edge("sub", END)
graph = builder.compile()
recorder = Recorder()
config = {"callbacks": [recorder]} if record else None
for _ in range(50):  # warm-up
    graph.invoke({"x": 1}, config)
recorder.events.clear()
start = time.perf_counter()
total = 0
for i in range(iterations):
    total += graph.invoke({"x": i}, config)["x"]
elapsed = time.perf_counter() - start
expected = sum((i + 1) * 2 - 3 for i in range(iterations))
assert total == expected, f"LangGraph computed {total}, expected {expected}"
assert not record or len(recorder.events) >= 8 * iterations, len(recorder.events)
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
