#!/usr/bin/env python3
"""Self-check of qdrant_server.py: starts it on a free port and drives it over gRPC with the Python QdrantClient
(prefer_grpc; its REST port points at a closed port, so any call that slipped to REST would fail) and, where
the client has no method for an RPC, with the raw stubs of the qdrant-client package. Prints PASS/FAIL per
scenario and exits non-zero on any failure.

    python3 crates/test-support/qdrant_server_check.py
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from typing import Any, Callable

import grpc as grpcio

from qdrant_client import QdrantClient, models
from qdrant_client import grpc as pb

warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "qdrant_server.py")
RESULTS: list[tuple[str, bool]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, path: str | None = None) -> None:
        self.port = free_port()
        args = [sys.executable, SERVER, "--port", str(self.port)]
        if path is not None:
            args += ["--path", path]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        expected = f"qdrant-grpc listening on 127.0.0.1:{self.port}\n"
        if line != expected:
            raise RuntimeError(f"server said {line!r}, stderr: {self.proc.stderr.read().decode()[-2000:]}")
        self.client = QdrantClient(
            host="127.0.0.1", port=free_port(), grpc_port=self.port, prefer_grpc=True, check_compatibility=False
        )
        self.channel = grpcio.insecure_channel(f"127.0.0.1:{self.port}")
        self.points = pb.PointsStub(self.channel)
        self.collections = pb.CollectionsStub(self.channel)
        self.snapshots = pb.SnapshotsStub(self.channel)

    def stop(self) -> int:
        self.client.close()
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        if self.proc.stdin:
            self.proc.stdin.close()
        return code


def scenario(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def run(fn: Callable[[], None]) -> Callable[[], None]:
        try:
            fn()
            RESULTS.append((name, True))
            print(f"PASS {name}", flush=True)
        except Exception:  # noqa: BLE001
            RESULTS.append((name, False))
            print(f"FAIL {name}\n" + "".join("    " + l for l in traceback.format_exc().splitlines(True)), flush=True)
        return fn

    return run


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def expect_status(fn: Callable[[], Any], code: grpcio.StatusCode, contains: str) -> str:
    try:
        fn()
    except grpcio.RpcError as e:
        expect(e.code() == code, f"expected {code}, got {e.code()}: {e.details()}")
        expect(contains in e.details(), f"{contains!r} not in {e.details()!r}")
        return e.details()
    raise AssertionError(f"expected {code}, the call succeeded")


def ids(points: Any) -> list[Any]:
    return sorted((p.id for p in points), key=str)


def main() -> int:
    srv = Server()
    c = srv.client
    U1 = str(uuid.UUID("5c56c793-69f3-4fbf-87e6-c4bf54c28c26"))
    messages: dict[str, str] = {}

    @scenario("health check (title, version)")
    def _() -> None:
        info = c.info()
        expect(info.title == "qdrant - vector search engine", info.title)
        expect(info.version.count(".") == 2, info.version)

    @scenario("create collection (cosine, cluster settings accepted) and get its config")
    def _() -> None:
        expect(
            c.create_collection(
                "docs",
                vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE),
                shard_number=2,
                replication_factor=1,
                write_consistency_factor=1,
                on_disk_payload=True,
            ),
            "create returned false",
        )
        info = c.get_collection("docs")
        params = info.config.params
        expect(params.vectors.size == 4 and params.vectors.distance == models.Distance.COSINE, str(params.vectors))
        expect(params.shard_number == 2 and params.replication_factor == 1, str(params))
        expect(info.status == models.CollectionStatus.GREEN and info.points_count == 0, str(info))

    @scenario("create named dense (Dot, Euclid) + sparse vectors collection")
    def _() -> None:
        c.create_collection(
            "multi",
            vectors_config={
                "dot": models.VectorParams(size=2, distance=models.Distance.DOT),
                "l2": models.VectorParams(size=3, distance=models.Distance.EUCLID),
            },
            sparse_vectors_config={"sp": models.SparseVectorParams()},
        )
        params = c.get_collection("multi").config.params
        expect(params.vectors["dot"].distance == models.Distance.DOT, str(params.vectors))
        expect(params.vectors["l2"].size == 3 and params.vectors["l2"].distance == models.Distance.EUCLID, "l2")
        expect("sp" in (params.sparse_vectors or {}), str(params.sparse_vectors))

    @scenario("list / exists")
    def _() -> None:
        names = sorted(col.name for col in c.get_collections().collections)
        expect(names == ["docs", "multi"], str(names))
        expect(c.collection_exists("docs") and not c.collection_exists("nope"), "exists")

    @scenario("upsert (wait, int + UUID ids, nested payload) and get with payload/vectors")
    def _() -> None:
        points = [
            models.PointStruct(id=1, vector=[1, 0, 0, 0], payload={
                "tag": "a", "n": 1, "flag": True, "price": 9.5, "tags": ["x", "y"],
                "meta": {"a": {"b": {"c": "deep"}}, "list": [1, 2]}, "opt": None}),
            models.PointStruct(id=2, vector=[0, 1, 0, 0], payload={
                "tag": "b", "n": 2, "flag": False, "price": 20.0, "tags": ["y"], "meta": {"a": {"b": {"c": "other"}}},
                "opt": "set"}),
            models.PointStruct(id=3, vector=[0, 0, 1, 0], payload={"tag": "c", "n": 3, "flag": True, "price": 30.0,
                                                                  "tags": []}),
            models.PointStruct(id=U1, vector=[0.9, 0.1, 0, 0], payload={"tag": "a", "n": 4, "flag": False,
                                                                       "price": 5.0, "tags": ["z"]}),
        ]
        r = c.upsert("docs", points=points, wait=True)
        expect(r.status == models.UpdateStatus.COMPLETED, str(r))
        got = c.retrieve("docs", ids=[1, U1, 99], with_payload=True, with_vectors=True)
        expect(ids(got) == sorted([1, U1], key=str), str(got))
        one = next(p for p in got if p.id == 1)
        expect(one.payload["meta"] == {"a": {"b": {"c": "deep"}}, "list": [1, 2]} and one.payload["opt"] is None,
               str(one.payload))
        expect(one.payload["flag"] is True and one.payload["price"] == 9.5 and one.payload["n"] == 1, "types")
        expect([round(x, 4) for x in one.vector] == [1, 0, 0, 0], str(one.vector))
        bare = c.retrieve("docs", ids=[2], with_payload=False, with_vectors=False)[0]
        expect(not bare.payload and bare.vector is None, str(bare))
        expect(c.count("docs").count == 4, "count")
        r = c.upsert("docs", points=[models.PointStruct(id=5, vector=[0, 0, 0, 1], payload={"tag": "e"})], wait=False)
        expect(r.status == models.UpdateStatus.ACKNOWLEDGED, str(r))
        expect(c.count("docs").count == 5, "count after wait=false")

    @scenario("query nearest: order, limit, score_threshold, with_payload/with_vectors, filter")
    def _() -> None:
        res = c.query_points("docs", query=[1, 0, 0, 0], limit=2, with_payload=True).points
        expect([p.id for p in res] == [1, U1], str(res))
        expect(abs(res[0].score - 1.0) < 1e-5 and res[0].payload["tag"] == "a" and res[0].vector is None, str(res[0]))
        res = c.query_points("docs", query=[1, 0, 0, 0], score_threshold=0.5, with_payload=False,
                             with_vectors=True).points
        expect(ids(res) == sorted([1, U1], key=str) and res[0].vector is not None and not res[0].payload, str(res))
        res = c.query_points("docs", query=[1, 0, 0, 0], query_filter=models.Filter(
            must=[models.FieldCondition(key="tag", match=models.MatchValue(value="b"))])).points
        expect([p.id for p in res] == [2], str(res))
        res = c.query_points("docs", query=[1, 0, 0, 0], limit=2, offset=1).points
        expect([p.id for p in res] == [U1, 2] or [p.id for p in res][0] == U1, str(res))

    @scenario("raw Query RPC: server defaults (limit 10, no payload, no vectors), `time` filled")
    def _() -> None:
        r = srv.points.Query(pb.QueryPoints(collection_name="docs", query=pb.Query(
            nearest=pb.VectorInput(dense=pb.DenseVector(data=[1, 0, 0, 0])))))
        expect(len(r.result) == 5 and r.result[0].id.num == 1 and r.time > 0, str(r))
        expect(len(r.result[0].payload) == 0 and not r.result[0].HasField("vectors"), str(r.result[0]))

    @scenario("legacy Search RPC (raw stub) with filter and payload")
    def _() -> None:
        r = srv.points.Search(pb.SearchPoints(
            collection_name="docs", vector=[0, 1, 0, 0], limit=3,
            with_payload=pb.WithPayloadSelector(enable=True),
            filter=pb.Filter(must_not=[pb.Condition(field=pb.FieldCondition(key="tag", match=pb.Match(keyword="c")))])))
        expect(r.result[0].id.num == 2 and r.result[0].payload["tag"].string_value == "b", str(r.result[0]))
        expect(all(p.payload["tag"].string_value != "c" for p in r.result) and r.time > 0, "filter/time")

    @scenario("named vectors: upsert, query with `using`, sparse query")
    def _() -> None:
        c.upsert("multi", points=[
            models.PointStruct(id=1, vector={"dot": [1, 0], "l2": [0, 0, 0],
                                             "sp": models.SparseVector(indices=[1, 5], values=[1.0, 0.5])}),
            models.PointStruct(id=2, vector={"dot": [0, 2], "l2": [1, 1, 1],
                                             "sp": models.SparseVector(indices=[2], values=[1.0])}),
        ])
        res = c.query_points("multi", query=[0, 1], using="dot").points
        expect([p.id for p in res] == [2, 1] and abs(res[0].score - 2.0) < 1e-5, str(res))
        res = c.query_points("multi", query=[1, 1, 1], using="l2").points
        expect([p.id for p in res] == [2, 1] and abs(res[0].score) < 1e-5, str(res))
        res = c.query_points("multi", query=models.SparseVector(indices=[5], values=[2.0]), using="sp").points
        expect([p.id for p in res] == [1] and abs(res[0].score - 1.0) < 1e-5, str(res))
        got = c.retrieve("multi", ids=[1], with_vectors=["dot"])[0]
        expect(list(got.vector) == ["dot"], str(got.vector))

    @scenario("prefetch + fusion RRF (and DBSF, parametrised RRF)")
    def _() -> None:
        prefetch = [
            models.Prefetch(query=[1, 0], using="dot", limit=5),
            models.Prefetch(query=models.SparseVector(indices=[2], values=[1.0]), using="sp", limit=5),
        ]
        res = c.query_points("multi", prefetch=prefetch, query=models.FusionQuery(fusion=models.Fusion.RRF)).points
        expect(ids(res) == [1, 2], str(res))
        res = c.query_points("multi", prefetch=prefetch, query=models.FusionQuery(fusion=models.Fusion.DBSF)).points
        expect(ids(res) == [1, 2], str(res))
        res = c.query_points("multi", prefetch=prefetch, query=models.RrfQuery(rrf=models.Rrf(k=10))).points
        expect(ids(res) == [1, 2], str(res))

    filters = {
        "match keyword": (models.Filter(must=[models.FieldCondition(key="tag", match=models.MatchValue(value="a"))]),
                          [1, U1]),
        "match integer": (models.Filter(must=[models.FieldCondition(key="n", match=models.MatchValue(value=2))]), [2]),
        "match bool": (models.Filter(must=[models.FieldCondition(key="flag", match=models.MatchValue(value=True))]),
                       [1, 3]),
        "match any keywords": (models.Filter(must=[models.FieldCondition(
            key="tag", match=models.MatchAny(any=["b", "c"]))]), [2, 3]),
        "match any integers": (models.Filter(must=[models.FieldCondition(
            key="n", match=models.MatchAny(any=[1, 4]))]), [1, U1]),
        "match any on array field": (models.Filter(must=[models.FieldCondition(
            key="tags", match=models.MatchAny(any=["y"]))]), [1, 2]),
        "match except keywords": (models.Filter(must=[models.FieldCondition(
            key="tag", match=models.MatchExcept(**{"except": ["a", "e"]}))]), [2, 3]),
        "match except integers": (models.Filter(must=[models.FieldCondition(
            key="n", match=models.MatchExcept(**{"except": [1, 2, 3]}))]), [U1]),
        "range gt/lte": (models.Filter(must=[models.FieldCondition(
            key="price", range=models.Range(gt=5.0, lte=20.0))]), [1, 2]),
        "range gte/lt": (models.Filter(must=[models.FieldCondition(
            key="price", range=models.Range(gte=5.0, lt=9.5))]), [U1]),
        "is_empty": (models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="tags"))]), [3, 5]),
        "is_null": (models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="opt"))]), [1]),
        "nested path a.b.c": (models.Filter(must=[models.FieldCondition(
            key="meta.a.b.c", match=models.MatchValue(value="deep"))]), [1]),
        "has_id (int + uuid)": (models.Filter(must=[models.HasIdCondition(has_id=[3, U1, 42])]), [3, U1]),
        "must_not": (models.Filter(must_not=[models.FieldCondition(key="tag", match=models.MatchValue(value="a"))]),
                     [2, 3, 5]),
        "should": (models.Filter(should=[
            models.FieldCondition(key="n", match=models.MatchValue(value=1)),
            models.FieldCondition(key="n", match=models.MatchValue(value=3))]), [1, 3]),
        "nested must/should/must_not": (models.Filter(
            must=[models.FieldCondition(key="price", range=models.Range(gte=5.0)),
                  models.Filter(should=[models.FieldCondition(key="flag", match=models.MatchValue(value=True)),
                                        models.FieldCondition(key="tag", match=models.MatchValue(value="a"))])],
            must_not=[models.Filter(must=[models.FieldCondition(key="n", match=models.MatchValue(value=3))])]),
            [1, U1]),
    }
    for label, (flt, expected) in filters.items():

        @scenario(f"filter round-trip: {label} (scroll + count + query)")
        def _(flt: models.Filter = flt, expected: list[Any] = expected) -> None:
            want = sorted(expected, key=str)
            got, _next = c.scroll("docs", scroll_filter=flt, limit=100)
            expect(ids(got) == want, f"scroll {ids(got)} != {want}")
            expect(c.count("docs", count_filter=flt, exact=True).count == len(want), "count")
            q = c.query_points("docs", query=[0.5, 0.5, 0.5, 0.5], query_filter=flt, limit=100).points
            expect(ids(q) == want, f"query {ids(q)} != {want}")

    @scenario("scroll pagination (limit + offset + next_page_offset) and with_payload selection")
    def _() -> None:
        seen: list[Any] = []
        offset = None
        while True:
            page, offset = c.scroll("docs", limit=2, offset=offset, with_payload=["tag"])
            seen += [p.id for p in page]
            expect(all(set(p.payload) <= {"tag"} for p in page), "payload include")
            if offset is None:
                break
        expect(sorted(seen, key=str) == sorted([1, 2, 3, 5, U1], key=str) and len(seen) == 5, str(seen))

    @scenario("create/delete field index reported in payload_schema")
    def _() -> None:
        r = c.create_payload_index("docs", "tag", field_schema=models.PayloadSchemaType.KEYWORD, wait=True)
        expect(r.status == models.UpdateStatus.COMPLETED, str(r))
        c.create_payload_index("docs", "price", field_schema=models.PayloadSchemaType.FLOAT)
        c.create_payload_index("docs", "meta.a.b.c", field_schema=models.KeywordIndexParams(
            type=models.KeywordIndexType.KEYWORD, is_tenant=True))
        schema = c.get_collection("docs").payload_schema
        expect(schema["tag"].data_type == models.PayloadSchemaType.KEYWORD and schema["tag"].points == 5, str(schema))
        expect(schema["price"].data_type == models.PayloadSchemaType.FLOAT and schema["price"].points == 4, "price")
        expect(schema["meta.a.b.c"].params.is_tenant is True, str(schema["meta.a.b.c"]))
        c.delete_payload_index("docs", "price")
        expect(sorted(c.get_collection("docs").payload_schema) == ["meta.a.b.c", "tag"], "after delete")

    @scenario("text index with scoring + BM25 text query")
    def _() -> None:
        c.create_collection("texts", vectors_config={})
        c.upsert("texts", points=[
            models.PointStruct(id=i, vector={}, payload={"body": body})
            for i, body in enumerate(["the quick brown fox", "a lazy dog sleeps", "quick quick fox jumps"])
        ])
        c.create_payload_index("texts", "body", field_schema=models.TextIndexParams(
            type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, scoring=True))
        res = c.query_points("texts", query=models.TextQuery(text="quick fox"), using="body", with_payload=True).points
        expect([p.id for p in res] == [2, 0], str(res))
        c.delete_collection("texts")

    @scenario("set / overwrite / delete / clear payload")
    def _() -> None:
        c.set_payload("docs", payload={"extra": {"k": [1, "two"]}}, points=[1, 2], wait=True)
        expect(c.retrieve("docs", ids=[2])[0].payload["extra"] == {"k": [1, "two"]}, "set")
        c.set_payload("docs", payload={"c": "changed"}, points=models.Filter(
            must=[models.HasIdCondition(has_id=[1])]), key="meta.a.b")
        expect(c.retrieve("docs", ids=[1])[0].payload["meta"]["a"]["b"]["c"] == "changed", "set with key")
        c.delete_payload("docs", keys=["extra"], points=[1, 2])
        expect("extra" not in c.retrieve("docs", ids=[1])[0].payload, "delete")
        c.overwrite_payload("docs", payload={"tag": "e", "only": 1}, points=[5])
        expect(c.retrieve("docs", ids=[5])[0].payload == {"tag": "e", "only": 1}, "overwrite")
        c.clear_payload("docs", points_selector=[5])
        expect(c.retrieve("docs", ids=[5])[0].payload == {}, "clear")

    @scenario("batch update, update/delete vectors")
    def _() -> None:
        c.batch_update_points("multi", update_operations=[
            models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(id=3, vector={"dot": [1, 1]})])),
            models.SetPayloadOperation(set_payload=models.SetPayload(payload={"b": 1}, points=[3])),
        ])
        expect(c.retrieve("multi", ids=[3])[0].payload == {"b": 1}, "batch")
        c.update_vectors("multi", points=[models.PointVectors(id=3, vector={"l2": [5, 5, 5]})])
        expect(list(c.retrieve("multi", ids=[3], with_vectors=True)[0].vector["l2"]) == [5, 5, 5], "update vectors")
        c.delete_vectors("multi", vectors=["l2"], points=[3])
        expect("l2" not in c.retrieve("multi", ids=[3], with_vectors=True)[0].vector, "delete vectors")

    @scenario("delete points by ids and by filter")
    def _() -> None:
        c.delete("docs", points_selector=models.PointIdsList(points=[5]), wait=True)
        expect(c.count("docs").count == 4, "by ids")
        c.delete("docs", points_selector=models.FilterSelector(filter=models.Filter(
            must=[models.FieldCondition(key="tag", match=models.MatchValue(value="a"))])))
        expect(ids(c.scroll("docs", limit=10)[0]) == [2, 3], "by filter")

    @scenario("missing collection -> NOT_FOUND (get, upsert, query, count, scroll, index)")
    def _() -> None:
        msg = "Not found: Collection `nope` doesn't exist!"
        messages["missing"] = expect_status(lambda: c.get_collection("nope"), grpcio.StatusCode.NOT_FOUND, msg)
        expect_status(lambda: c.upsert("nope", points=[models.PointStruct(id=1, vector=[1, 0, 0, 0])]),
                      grpcio.StatusCode.NOT_FOUND, msg)
        expect_status(lambda: c.query_points("nope", query=[1, 0, 0, 0]), grpcio.StatusCode.NOT_FOUND, msg)
        expect_status(lambda: c.count("nope"), grpcio.StatusCode.NOT_FOUND, msg)
        expect_status(lambda: c.scroll("nope"), grpcio.StatusCode.NOT_FOUND, msg)
        expect_status(lambda: c.create_payload_index("nope", "f", field_schema="keyword"),
                      grpcio.StatusCode.NOT_FOUND, msg)
        expect(c.delete_collection("nope") is False, "delete of a missing collection is false")

    @scenario("bad arguments -> INVALID_ARGUMENT / ALREADY_EXISTS (server survives)")
    def _() -> None:
        messages["dim upsert"] = expect_status(
            lambda: c.upsert("docs", points=[models.PointStruct(id=9, vector=[1, 0, 0])]),
            grpcio.StatusCode.INVALID_ARGUMENT, "Vector dimension error: expected dim: 4, got 3")
        messages["dim query"] = expect_status(
            lambda: c.query_points("docs", query=[1, 0, 0]),
            grpcio.StatusCode.INVALID_ARGUMENT, "Vector dimension error: expected dim: 4, got 3")
        expect_status(lambda: c.query_points("multi", query=[1, 0, 0], using="dot"),
                      grpcio.StatusCode.INVALID_ARGUMENT, "expected dim: 2, got 3")
        expect_status(lambda: c.query_points("multi", query=[1, 0], using="nope"),
                      grpcio.StatusCode.INVALID_ARGUMENT, "nope")
        expect_status(lambda: srv.points.Upsert(pb.UpsertPoints(
            collection_name="docs", points=[pb.PointStruct(id=pb.PointId(uuid="not-a-uuid"),
                                                           vectors=pb.Vectors(vector=pb.Vector(data=[1, 0, 0, 0])))])),
                      grpcio.StatusCode.INVALID_ARGUMENT, "")
        messages["exists"] = expect_status(
            lambda: c.create_collection("docs", vectors_config=models.VectorParams(size=4, distance="Cosine")),
            grpcio.StatusCode.ALREADY_EXISTS, "Collection `docs` already exists!")
        expect(c.count("docs").count == 2, "server still serves")

    @scenario("unimplemented RPCs -> UNIMPLEMENTED naming the RPC")
    def _() -> None:
        messages["unimplemented"] = expect_status(
            lambda: srv.points.Recommend(pb.RecommendPoints(collection_name="docs")),
            grpcio.StatusCode.UNIMPLEMENTED, "qdrant.Points/Recommend")
        expect_status(lambda: srv.collections.UpdateAliases(pb.ChangeAliases()),
                      grpcio.StatusCode.UNIMPLEMENTED, "qdrant.Collections/UpdateAliases")
        expect_status(lambda: srv.snapshots.List(pb.ListSnapshotsRequest(collection_name="docs")),
                      grpcio.StatusCode.UNIMPLEMENTED, "qdrant.Snapshots/List")

    @scenario("update collection (no-op) and raw responses carry time")
    def _() -> None:
        expect(c.update_collection("docs", optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1)),
               "update")
        r = srv.collections.Get(pb.GetCollectionInfoRequest(collection_name="docs"))
        expect(r.time > 0 and r.result.config.params.vectors_config.params.size == 4, str(r.time))

    @scenario("concurrent clients (8 threads upserting and querying)")
    def _() -> None:
        c.create_collection("conc", vectors_config=models.VectorParams(size=2, distance=models.Distance.EUCLID))
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(20):
                    c.upsert("conc", points=[models.PointStruct(id=t * 100 + i, vector=[t, i], payload={"t": t})])
                    c.query_points("conc", query=[t, i], limit=3)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        [th.start() for th in threads]
        [th.join() for th in threads]
        expect(not errors, str(errors[:1]))
        expect(c.count("conc").count == 160, "count")

    @scenario("delete collection")
    def _() -> None:
        expect(c.delete_collection("conc") is True and not c.collection_exists("conc"), "delete")

    @scenario("SIGTERM exits cleanly")
    def _() -> None:
        code = srv.stop()
        expect(code == 0, f"exit code {code}")

    with tempfile.TemporaryDirectory() as tmp:

        @scenario("persistence with --path (points, payload_schema, cluster settings survive a restart)")
        def _() -> None:
            s1 = Server(tmp)
            s1.client.create_collection("p", vectors_config=models.VectorParams(size=2, distance="Dot"),
                                        shard_number=3)
            s1.client.upsert("p", points=[models.PointStruct(id=7, vector=[1, 2], payload={"k": "v"})])
            s1.client.create_payload_index("p", "k", field_schema="keyword")
            expect(s1.stop() == 0, "stop")
            s2 = Server(tmp)
            try:
                info = s2.client.get_collection("p")
                expect(info.points_count == 1 and info.config.params.shard_number == 3, str(info.config.params))
                expect(info.payload_schema["k"].data_type == models.PayloadSchemaType.KEYWORD, "schema")
                expect(s2.client.retrieve("p", ids=[7])[0].payload == {"k": "v"}, "payload")
            finally:
                s2.stop()

    @scenario("stdin EOF takes the server down")
    def _() -> None:
        s = Server()
        s.client.close()
        s.proc.stdin.close()
        code = s.proc.wait(timeout=10)
        expect(code == 0, f"exit code {code}")

    for k, v in messages.items():
        print(f"  [{k}] {v}")
    failed = sum(1 for _, ok in RESULTS if not ok)
    print(f"{len(RESULTS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
