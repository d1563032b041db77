#!/usr/bin/env python3
"""Checks the printed values of notebooks executed by scripts/run-notebooks.sh.

nbconvert already fails on a cell error (a failed assert! in a cell is one); this re-reads the executed notebooks
and checks what the cells printed, independently of the Rust code: every code cell ran and printed no error, and
per notebook the values are plausible (the chunk count against the corpus on disk, a non-empty answer with
sources that exist, a ticket that deserialises with its fields in range, template captures consistent with their
branch).

Usage: scripts/check_notebook_outputs.py EXECUTED.ipynb ...   (CATENA_DOCS: the rust-book folder, for rag.ipynb)
"""

import json
import math
import os
import re
import sys
from pathlib import Path


class CheckError(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckError(message)


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def cell_text(cell):
    """The stdout of a code cell (and text/plain results), as one string."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            parts.append("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
        elif out.get("output_type") in ("execute_result", "display_data"):
            data = out.get("data", {}).get("text/plain")
            if data:
                parts.append("".join(data) if isinstance(data, list) else data)
    return "".join(parts)


def check_common(nb):
    """Every code cell ran, none reported an error; returns the notebook's stdout."""
    cells = code_cells(nb)
    expect(cells, "the notebook has no code cells")
    for i, cell in enumerate(cells):
        source = "".join(cell["source"]).strip()
        expect(cell.get("execution_count") is not None, f"code cell {i} did not run: {source[:60]!r}")
        for out in cell.get("outputs", []):
            expect(out.get("output_type") != "error", f"code cell {i} failed: {out.get('ename')}: {out.get('evalue')}")
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                expect("panicked" not in text, f"code cell {i} panicked: {text.strip()[:300]}")
    return "\n".join(cell_text(c) for c in cells)


def one(pattern, text, what):
    matches = re.findall(pattern, text, flags=re.MULTILINE)
    expect(len(matches) == 1, f"expected one line with {what} (/{pattern}/), found {len(matches)}")
    return matches[0]


def source_of(nb):
    return "\n".join("".join(c["source"]) for c in code_cells(nb))


def check_rag(nb, out):
    docs = Path(os.environ.get("CATENA_DOCS", "")).resolve()
    expect(docs.is_dir(), f"CATENA_DOCS={docs} is not the rust-book folder")
    # The globs the notebook indexed, read from its source so the two stay in step.
    include = re.findall(r'"([^"]+\.md)"', one(r"^let include = \[(.*)\];", source_of(nb), "the include globs"))
    expect(include, "no include globs in the notebook")
    files = sorted({p for g in include for p in docs.glob(g) if p.is_file()})
    total_chars = sum(len(p.read_text(encoding="utf-8")) for p in files)

    chunks, nfiles = map(int, one(r"^Indexed (\d+) chunks from (\d+) files$", out, "the chunk count"))
    expect(nfiles == len(files), f"the notebook indexed {nfiles} files; {include} match {len(files)} in {docs}")
    # Chunks hold at most 1000 characters, so at least total/1000 of them; with a 200-character overlap each new
    # chunk adds at least some text, so far fewer than one per 100 characters.
    lower = max(len(files), math.ceil(total_chars / 1000))
    expect(lower <= chunks <= total_chars // 100, f"{chunks} chunks for {total_chars} characters in {len(files)} files")

    embedded, dims, held = one(r"^Embedded (\d+) chunks \((\d+) dimensions, .*\) in [\d.]+ s; the store holds (\d+)$",
                               out, "the embedding summary")
    expect(int(embedded) == chunks and int(held) == chunks, f"embedded {embedded}, store holds {held}, chunks {chunks}")
    expect(int(dims) == 384, f"all-MiniLM-L6-v2 has 384 dimensions, the notebook reports {dims}")

    answer = re.search(r"^Answer: (.*?)(?:\n\s*\nSources:|\Z)", out, flags=re.MULTILINE | re.DOTALL)
    expect(answer and answer.group(1).strip(), "the answer is missing or empty")

    sources = re.findall(r"^Source (\d+): (.+) score=(-?[\d.]+) \((\d+) characters\)$", out, flags=re.MULTILINE)
    expect(len(sources) == 4, f"expected 4 sources, found {len(sources)}")
    names = {p.name for p in files}
    scores = []
    for rank, (r, path, score, size) in enumerate(sources, start=1):
        expect(int(r) == rank, f"source ranks are not 1..4: {[s[0] for s in sources]}")
        expect(Path(path).name in names, f"source {path} is not one of the indexed files")
        expect(0 < int(size) <= 1000, f"source {path} has {size} characters")
        scores.append(float(score))
    expect(all(-1.0 <= s <= 1.0 for s in scores), f"cosine scores out of range: {scores}")
    expect(scores == sorted(scores, reverse=True), f"sources are not best first: {scores}")
    return f"{chunks} chunks from {len(files)} files, answer of {len(answer.group(1).strip())} characters, 4 sources"


def check_structured_output(nb, out):
    one(r"^\S+\.gguf with (\d+) tokens of context$", out, "the model line")
    ticket = json.loads(one(r"^Ticket JSON: (.*)$", out, "the ticket JSON"))
    expect(set(ticket) == {"title", "severity", "component"}, f"ticket fields: {sorted(ticket)}")
    expect(isinstance(ticket["title"], str) and len(ticket["title"]) <= 40, f"title: {ticket['title']!r}")
    expect(isinstance(ticket["component"], str) and len(ticket["component"]) <= 20, f"component: {ticket['component']!r}")
    expect(isinstance(ticket["severity"], int) and 1 <= ticket["severity"] <= 5, f"severity: {ticket['severity']!r}")
    strategy = one(r"^strategy=(\w+) attempts=\d+$", out, "the strategy")
    expect(strategy == "grammar", f"strategy {strategy}, expected grammar on a local model")

    captures = json.loads(one(r"^Captures JSON: (.*)$", out, "the captures JSON"))
    pet = captures.get("pet")
    if pet == "cat":
        expect(set(captures) == {"pet", "whiskers"}, f"captures: {captures}")
        expect(re.fullmatch(r"[0-9]{1,2}", captures["whiskers"]), f"whiskers: {captures['whiskers']!r}")
    elif pet == "fish":
        expect(set(captures) == {"pet", "fins"}, f"captures: {captures}")
        expect(captures["fins"] in ("two", "four"), f"fins: {captures['fins']!r}")
    else:
        raise CheckError(f"pet is {pet!r}, not one of the options")
    return f"ticket {ticket}, captures {captures}"


def check_vector_stores(nb, out):
    chunks = int(one(r"^Chunks: (\d+)$", out, "the chunk count"))
    expect(chunks > 20, f"chapters 8 and 12 give more than 20 chunks, the notebook reports {chunks}")
    for label in ("In-memory store", "SQLite store", "Reopened"):
        held = int(one(rf"^{label}: (\d+) documents", out, f"the {label} count"))
        expect(held == chunks, f"{label}: {held} documents, expected {chunks}")
    expect(one(r"^Same top 5 in both stores: (\w+)$", out, "the store comparison") == "true",
           "the in-memory and SQLite stores ranked differently")
    rows = dict(((q, m), files.split(", ")) for q, m, files in
                re.findall(r'^"(.+)" +(dense|keyword|hybrid): (.*)$', out, flags=re.MULTILINE))
    expect(len(rows) == 6, f"expected 6 retrieval lines, found {len(rows)}")
    expect(rows[("or_insert", "keyword")][0] == "ch08-03-hash-maps.md", f"BM25 for or_insert: {rows[('or_insert', 'keyword')]}")
    expect("ch08-03-hash-maps.md" in rows[("or_insert", "hybrid")], f"hybrid for or_insert: {rows[('or_insert', 'hybrid')]}")
    question = "How do I read a file into a string?"
    expect("ch12-02-reading-a-file.md" in rows[(question, "dense")], f"dense for the file question: {rows[(question, 'dense')]}")
    for (q, m), files in rows.items():
        # BM25 returns only chunks that contain a query word: `or_insert` is in two.
        expected = range(1, 4) if m == "keyword" else range(3, 4)
        expect(len(files) in expected and all(f.endswith(".md") for f in files), f"{q} {m}: {files}")
    n, chapters = one(r"^Filtered to chapter 12: (\d+) results, chapters \[(.*)\]$", out, "the filtered search")
    values = re.findall(r"Number\((\d+)\)", chapters)
    expect(int(n) == 5 and len(values) == 5 and set(values) == {"12"}, f"filtered results: {n}, chapters {chapters}")
    held = int(one(r"^Chroma store: (\d+) documents at ", out, "the Chroma count"))
    expect(held == chunks, f"Chroma store: {held} documents, expected {chunks}")
    expect(one(r"^Same top 5 in Chroma and SQLite: (\w+)$", out, "the Chroma comparison") == "true",
           "Chroma and SQLite ranked the top 5 differently (an HNSW index over 141 vectors should be exact)")
    side = dict(((q, store), files) for q, store, files in
                re.findall(r'^"(.+)" dense on (sqlite|chroma): (.*)$', out, flags=re.MULTILINE))
    expect(len(side) == 4, f"expected 4 side-by-side dense lines, found {len(side)}")
    for q in ("or_insert", question):
        expect(side[(q, "sqlite")] == side[(q, "chroma")], f"{q}: SQLite {side[(q, 'sqlite')]} vs Chroma {side[(q, 'chroma')]}")
    local = dict(((q, m), files.split(", ")) for q, m, files in
                 re.findall(r'^"(.+)" (keyword|hybrid) on chroma: (.*)$', out, flags=re.MULTILINE))
    expect(len(local) == 4, f"expected 4 keyword/hybrid lines on Chroma, found {len(local)}")
    expect(local[("or_insert", "keyword")][0] == "ch08-03-hash-maps.md", f"local BM25 for or_insert: {local[('or_insert', 'keyword')]}")
    expect("ch08-03-hash-maps.md" in local[("or_insert", "hybrid")], f"Chroma hybrid for or_insert: {local[('or_insert', 'hybrid')]}")
    expect("ch12-02-reading-a-file.md" in local[(question, "hybrid")], f"Chroma hybrid for the file question: {local[(question, 'hybrid')]}")
    n, same = one(r"^Chroma filtered to chapter 12: (\d+) results, same as SQLite: (\w+)$", out, "Chroma's filtered search")
    expect(int(n) == 5 and same == "true", f"Chroma's filtered search: {n} results, same as SQLite: {same}")
    expect(re.search(r"^Cleaned up$", out, flags=re.MULTILINE) is not None, "the clean-up cell did not finish")
    return (f"{chunks} chunks in memory, SQLite and Chroma, reopened, BM25 finds or_insert in ch08-03, "
            "Chroma ranks and filters as SQLite does, hybrid on Chroma with a local BM25 index")


def check_providers(nb, out):
    expect(one(r"^Connections run on: (\w+) ", out, "the I/O placement") == "Dedicated",
           "inside evcxr the client must run its connections on its own thread")
    answer = one(r"^Answer: (.+)$", out, "the answer")
    expect("paris" in answer.lower(), f"SmolLM2 at temperature 0 names Paris: {answer!r}")
    expect(one(r"^Finish reason: (Some\(\w+\))", out, "the finish reason") == "Some(Stop)", "the answer was cut off")
    usage = re.search(r"^Usage: (\d+) input tokens, (\d+) output tokens$", out, flags=re.MULTILINE)
    expect(usage is not None and int(usage.group(1)) > 0 and int(usage.group(2)) > 0, "no token usage reported")
    deltas = int(one(r"^Streamed (\d+) deltas: ", out, "the streamed answer"))
    expect(deltas > 1, f"a streamed answer arrives in more than one delta, got {deltas}")
    expect(one(r"^Same as the plain answer: (\w+)$", out, "the stream comparison") == "true",
           "the streamed answer differs from the plain one at temperature 0")
    ok, total = one(r"^Concurrent calls: (\d+) of (\d+) answered", out, "the concurrent calls")
    expect(ok == total == "8", f"concurrent calls: {ok} of {total} answered")
    expect(re.search(r"^Server stopped$", out, flags=re.MULTILINE) is not None, "the server was not stopped")
    formats = re.findall(r"^(OpenAI|Anthropic|Gemini|Azure OpenAI): (\[echo\].*)$\n^  question arrived: (\w+), usage (.+), streamed == plain: (\w+)$",
                         out, flags=re.MULTILINE)
    expect(len(formats) == 4, f"expected four wire formats answering, found {len(formats)}: {formats}")
    for name, echo, arrived, usage, same in formats:
        # The whole conversation arrived: system prompt, earlier exchange and question.
        expect(" messages=4 " in echo, f"{name}: the server did not receive all four messages: {echo}")
        expect(arrived == "true", f"{name}: the question did not arrive")
        expect(usage != "none", f"{name}: no usage")
        expect(same == "true", f"{name}: the streamed answer differs from the plain one")
    expect(re.search(r"^llm-katan stopped$", out, flags=re.MULTILINE) is not None, "llm-katan was not stopped")
    return (f"answered (Paris), streamed in {deltas} deltas identically, 8 of 8 concurrent calls, on the dedicated I/O "
            "thread; one conversation through the OpenAI, Anthropic, Gemini and Azure formats on llm-katan")


def check_agents(nb, out):
    expect(one(r"^Model: .+ \(tool calling: (\w+)\)$", out, "the model line") == "true", "SmolLM2 must declare tools")
    calls, tools = one(r"^Model calls: (\d+), tool calls: (\d+), tokens", out, "the first run's counts")
    expect(1 <= int(calls) <= 4 and 1 <= int(tools) <= 4, f"the first run: {calls} model calls, {tools} tool calls")
    a, b, product = one(r"^multiply\(([-\d.e]+), ([-\d.e]+)\) returned ([-\d.e]+)$", out, "the multiply call")
    expect(math.isclose(float(a) * float(b), float(product)), f"multiply({a}, {b}) returned {product}")
    expect(re.search(r"^  tool call: capital\(", out, flags=re.MULTILINE) is not None, "the streamed run called capital")
    result = one(r"^  result of capital: (.+) in \d+ ms$", out, "the capital tool's result")
    expect(result.startswith("Ok(") or result.startswith("Err("), f"a typed tool result: {result}")
    events, deltas = one(r"^Events: (\d+) \((\d+) text deltas\)", out, "the event count")
    expect(int(events) > int(deltas) >= 0, f"events {events}, deltas {deltas}")
    expect(one(r"^Waiting for approval: (\w+)\(", out, "the approval stop") == "send_email", "the run stops before send_email")
    expect(one(r"^Tool result after approval: (.+)$", out, "the approved call") == "sent to team@example.com",
           "the edited arguments ran")
    rejected = one(r"^Tool result after rejection: (.+)$", out, "the rejected call")
    expect(rejected == "error: the call was rejected: never send passwords", f"the rejection reached the model: {rejected}")
    total, sent, cost = one(r"^Conversation: (\d+) messages; sent: (\d+) messages, (\d+) tokens \(budget 120\)$", out, "the memory")
    expect(int(sent) < int(total) and int(cost) <= 120, f"memory: {sent} of {total} messages, {cost} tokens")
    return f"tool calls on SmolLM2, typed events, approval (edit, reject) through saved state, memory {sent}/{total} messages"


def check_tracing(nb, out):
    questions = re.findall(r'^\s*"(.+)"\.to_string\(\),$', source_of(nb), flags=re.MULTILINE)
    expect(len(questions) == 3, f"expected the notebook to ask 3 questions, found {questions}")
    recorded, written, dropped = one(r"^Recorder: (\d+) runs recorded, (\d+) written, (\d+) dropped$", out, "the recorder stats")
    expect(int(recorded) > 0 and written == recorded and dropped == "0", f"recorder: {recorded} recorded, {written} written, {dropped} dropped")
    db = one(r"^Trace store: (\S+\.db)$", out, "the trace store path")
    expect(one(r"^Browse the same runs in the studio: cargo run -p catena-studio -- --db (\S+)$", out, "the studio command") == db,
           "the studio command names another file")
    n, tokens_in, tokens_out, unpriced = one(r"^Totals: (\d+) traces, (\d+) tokens in, (\d+) tokens out, \$0\.0+ \((\d+) unpriced calls\)$",
                                             out, "the totals (free)")
    expect(n == "3" and int(tokens_in) > 0 and int(tokens_out) > 0 and unpriced == "0",
           f"totals: {n} traces, {tokens_in}/{tokens_out} tokens, {unpriced} unpriced")

    traces = re.findall(r"^ *(\d+) +([\d.]+) +(\d+) +(\d+) +(\d+) +(free|\$[\d.]+\+?) +(.+)$", out, flags=re.MULTILINE)
    expect(len(traces) == 3, f"expected 3 rows in the trace table, found {len(traces)}")
    expect([t[6] for t in traces] == questions, f"traces {[t[6] for t in traces]} are not the questions {questions}, in order")
    expect(sum(int(t[3]) for t in traces) == int(tokens_in) and sum(int(t[4]) for t in traces) == int(tokens_out),
           "the trace rows do not add up to the totals")
    steps = re.findall(r"^ *(\d+) +(\d+) +(\d+|-) +(\w+) +([\d.]+) +(\d+|-) +(\d+|-) +\|[^|]*\| +(\S.*)$", out, flags=re.MULTILINE)
    latencies = []
    for number, latency, runs, t_in, t_out, cost, question in traces:
        rows = [s for s in steps if s[0] == number]
        what = f"trace {number} ({question})"
        expect(float(latency) > 0 and 0 < int(t_in) and 0 < int(t_out) <= 48, f"{what}: latency {latency} ms, tokens {t_in}/{t_out}")
        expect(cost == "free", f"{what}: cost {cost}, a local model is free")
        expect(len(rows) == int(runs), f"{what}: {len(rows)} step rows, the trace has {runs} runs")
        expect([int(r[1]) for r in rows] == list(range(1, len(rows) + 1)), f"{what}: steps are not numbered 1..{len(rows)}")
        expect(rows[0][2] == "-" and rows[0][7] == "question" and float(rows[0][4]) == float(latency),
               f"{what}: the first step is not the question span: {rows[0]}")
        for r in rows[1:]:
            expect(r[2] != "-" and 1 <= int(r[2]) < int(r[1]), f"{what}: step {r[1]} has no parent before it in the trace ({r[2]})")
            expect(float(r[4]) <= float(latency), f"{what}: step {r[1]} ({r[4]} ms) outlasts its trace ({latency} ms)")
        by_kind = {k: [r for r in rows if r[3] == k] for k in ("retrieval", "llm", "chain")}
        expect(len(by_kind["retrieval"]) == 1 and len(by_kind["llm"]) == 1, f"{what}: expected one retrieval and one llm step: {rows}")
        retrieval, llm = by_kind["retrieval"][0], by_kind["llm"][0]
        parent = rows[int(llm[2]) - 1]
        expect(parent[3] == "chain" and parent[7].strip() == "rag", f"{what}: the llm step's parent is {parent}, not the rag chain")
        expect(rows[int(retrieval[2]) - 1][3] == "chain", f"{what}: the retrieval's parent is not the chain")
        expect((llm[5], llm[6]) == (t_in, t_out), f"{what}: the llm step has tokens {llm[5]}/{llm[6]}, the trace {t_in}/{t_out}")
        for r in [rows[0], parent, retrieval, llm]:
            expect(float(r[4]) > 0, f"{what}: step {r[1]} ({r[3]}) has latency {r[4]} ms")
        latencies += [float(retrieval[4]), float(llm[4])]
    expect(re.search(r"^All checks passed: 3 traces", out, flags=re.MULTILINE) is not None, "the assertion cell did not finish")
    expect(re.search(r"^Cleaned up$", out, flags=re.MULTILINE) is not None, "the clean-up cell did not finish")
    return (f"3 traces of {', '.join(t[2] for t in traces)} runs, each question > rag > retrieval + llm; "
            f"{tokens_in} tokens in, {tokens_out} out, free; step latencies {min(latencies):.1f}..{max(latencies):.1f} ms")


CHECKS = {"agents": check_agents, "providers": check_providers, "rag": check_rag, "structured_output": check_structured_output, "tracing": check_tracing, "vector_stores": check_vector_stores}


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        name = Path(path).stem
        try:
            nb = json.loads(Path(path).read_text(encoding="utf-8"))
            out = check_common(nb)
            check = CHECKS.get(name)
            summary = check(nb, out) if check else "no value checks for this notebook (cells ran without errors)"
            print(f"[check] {name}: ok: {summary}")
        except (CheckError, KeyError, ValueError, OSError) as e:
            failed += 1
            print(f"[check] {name}: FAILED: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
