"""Peer for benches/chain.rs: LangChain LCEL `RunnableLambda | RunnableLambda | RunnableLambda` invoke time.

Prints one JSON object: {"per_invoke_ns": float, "iterations": int, "result": int}.
"""
import json
import sys
import time

from langchain_core.runnables import RunnableLambda

iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(lambda x: x * 2) | RunnableLambda(lambda x: x - 3)
for _ in range(100):  # warm-up
    chain.invoke(1)
start = time.perf_counter()
total = 0
for i in range(iterations):
    total += chain.invoke(i)
elapsed = time.perf_counter() - start
print(json.dumps({"per_invoke_ns": elapsed / iterations * 1e9, "iterations": iterations, "result": total}))
