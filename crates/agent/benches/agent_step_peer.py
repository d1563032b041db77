#!/usr/bin/env python3
"""LangChain peer for crates/agent/benches/agent_step.rs: the same two measurements with `create_agent`.

Overhead: a fake chat model (langchain_core's FakeMessagesListChatModel with a no-op bind_tools, cycling through 20 AI messages that each
call an instant tool once, then a final text message) and a tool that returns at once; per step = run time / 21,
median of the runs, with `invoke` (sync) and `ainvoke` (async). Parallel: one AI message with 8 calls to an async
tool sleeping 20 ms, `ainvoke` with max_concurrency 1, 2, 4, 8. Setup: `pip install langchain langchain-core`.
"""

import asyncio
import statistics
import time

TOOL_TURNS = 20


def main():
    import langchain
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    class ToolFake(FakeMessagesListChatModel):
        """The fake chat model with tools bound as LangChain's own agent tests do (binding is a no-op)."""

        def bind_tools(self, tools, **kwargs):
            return self

    @tool
    def noop(x: int) -> int:
        """Returns its input."""
        return x

    @tool
    async def sleep(x: int) -> int:
        """Sleeps 20 ms."""
        await asyncio.sleep(0.02)
        return x

    def script(tool_name, turns, calls):
        out = [
            AIMessage(
                content="",
                tool_calls=[{"name": tool_name, "args": {"x": i}, "id": f"call_{t}_{i}"} for i in range(calls)],
            )
            for t in range(turns)
        ]
        return out + [AIMessage(content="done")]

    steps = TOOL_TURNS + 1
    model = ToolFake(responses=script("noop", TOOL_TURNS, 1))
    agent = create_agent(model, tools=[noop])
    inputs = {"messages": [{"role": "user", "content": "go"}]}
    config = {"recursion_limit": 100}
    for _ in range(20):
        agent.invoke(inputs, config)
    per_step = []
    for _ in range(200):
        t = time.perf_counter()
        out = agent.invoke(inputs, config)
        per_step.append((time.perf_counter() - t) * 1e6 / steps)
    assert out["messages"][-1].content == "done", out["messages"][-1]
    print(f"langchain {langchain.__version__} create_agent per step (invoke): {statistics.median(per_step):.2f} us "
          f"(median of 200 runs of {steps} steps)")

    async def async_steps():
        times = []
        for _ in range(20):
            await agent.ainvoke(inputs, config)
        for _ in range(200):
            t = time.perf_counter()
            await agent.ainvoke(inputs, config)
            times.append((time.perf_counter() - t) * 1e6 / steps)
        return statistics.median(times)

    print(f"langchain create_agent per step (ainvoke): {asyncio.run(async_steps()):.2f} us")

    async def parallel(concurrency):
        model = ToolFake(responses=script("sleep", 1, 8))
        agent = create_agent(model, tools=[sleep])
        cfg = {"recursion_limit": 100, "max_concurrency": concurrency}
        times = []
        for _ in range(10):
            t = time.perf_counter()
            await agent.ainvoke(inputs, cfg)
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)

    for c in [1, 2, 4, 8]:
        print(f"langchain 8 x 20 ms tools, max_concurrency {c}: {asyncio.run(parallel(c)):.1f} ms")


if __name__ == "__main__":
    main()
