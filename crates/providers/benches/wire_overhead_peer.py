"""The Python side of benches/wire_overhead.rs: the official SDKs (openai, anthropic, google-genai) calling the
bench's local server, whole and streamed answers, sequentially on one client each. Prints one JSON line per row:
{"format", "mode", "sdk", "mean_us", "p50_us"}."""

import argparse
import json
import statistics
import time


def timed(n, call):
    for _ in range(max(1, n // 10)):
        call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.fmean(times), statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    n = args.requests
    messages = [{"role": "user", "content": "Tell me a long story."}]
    rows = []

    import openai

    client = openai.OpenAI(base_url=args.base_url + "/v1", api_key="sk-bench", max_retries=0)

    def openai_chat():
        r = client.chat.completions.create(model="m", messages=messages, max_tokens=256)
        assert r.usage.completion_tokens == 200 and r.choices[0].message.content.endswith("word199")

    def openai_stream():
        text, usage = [], None
        for chunk in client.chat.completions.create(
            model="m", messages=messages, max_tokens=256, stream=True, stream_options={"include_usage": True}
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage
        assert usage.completion_tokens == 200 and "".join(text).strip().endswith("word199")

    rows.append(("openai", "chat", f"openai {openai.__version__}", openai_chat))
    rows.append(("openai", "stream", f"openai {openai.__version__}", openai_stream))

    import anthropic

    aclient = anthropic.Anthropic(base_url=args.base_url, api_key="sk-ant-bench", max_retries=0)

    def anthropic_chat():
        r = aclient.messages.create(model="m", messages=messages, max_tokens=256)
        assert r.usage.output_tokens == 200 and r.content[0].text.endswith("word199")

    def anthropic_stream():
        text, usage = [], None
        for event in aclient.messages.create(model="m", messages=messages, max_tokens=256, stream=True):
            if event.type == "content_block_delta":
                text.append(event.delta.text)
            elif event.type == "message_delta":
                usage = event.usage
        assert usage.output_tokens == 200 and "".join(text).strip().endswith("word199")

    rows.append(("anthropic", "chat", f"anthropic {anthropic.__version__}", anthropic_chat))
    rows.append(("anthropic", "stream", f"anthropic {anthropic.__version__}", anthropic_stream))

    from google import genai
    from google.genai import types

    gclient = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=args.base_url, api_version="v1beta"))
    config = types.GenerateContentConfig(max_output_tokens=256)

    def gemini_chat():
        r = gclient.models.generate_content(model="m", contents="Tell me a long story.", config=config)
        assert r.usage_metadata.candidates_token_count == 200 and r.text.endswith("word199")

    def gemini_stream():
        text, usage = [], None
        for chunk in gclient.models.generate_content_stream(model="m", contents="Tell me a long story.", config=config):
            if chunk.text:
                text.append(chunk.text)
            if chunk.usage_metadata and chunk.usage_metadata.candidates_token_count:
                usage = chunk.usage_metadata
        assert usage.candidates_token_count == 200 and "".join(text).strip().endswith("word199")

    version = getattr(genai, "__version__", "")
    rows.append(("gemini", "chat", f"google-genai {version}".strip(), gemini_chat))
    rows.append(("gemini", "stream", f"google-genai {version}".strip(), gemini_stream))

    for fmt, mode, sdk, call in rows:
        mean, p50 = timed(n, call)
        print(json.dumps({"format": fmt, "mode": mode, "sdk": sdk, "mean_us": mean, "p50_us": p50}), flush=True)


if __name__ == "__main__":
    main()
