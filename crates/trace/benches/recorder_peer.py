"""The peer of benches/recorder.rs: nanoseconds per span for the Python OpenTelemetry SDK creating the same chat
span (the same attributes, set at creation and after) with a BatchSpanProcessor and an exporter that drops the
spans. Prints the best round's ns per span.

Usage: python recorder_peer.py <spans> <rounds>
"""
import sys
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class Drop(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def main():
    spans, rounds = int(sys.argv[1]), int(sys.argv[2])
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1 << 20))
    tracer = provider.get_tracer("bench")
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for i in range(spans):
            with tracer.start_as_current_span(
                "chat gpt-4o-mini",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.request.temperature": 0.2,
                    "gen_ai.request.max_tokens": 256,
                    "catena.tags": "bench",
                },
            ) as span:
                span.set_attribute("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
                span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
                span.set_attribute("gen_ai.usage.input_tokens", 1200 + i % 7)
                span.set_attribute("gen_ai.usage.output_tokens", 80)
                span.set_attribute("catena.time_to_first_chunk_ms", 120.5)
                span.set_attribute("catena.latency_ms", 850.25)
                span.set_attribute("catena.stream.outcome", "completed")
        best = min(best, (time.perf_counter_ns() - t) / spans)
    provider.shutdown()
    print(f"{best:.1f}")


main()
