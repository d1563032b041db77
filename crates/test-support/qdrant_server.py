#!/usr/bin/env python3
"""A Qdrant gRPC server for catena's tests: Qdrant's own local-mode engine behind Qdrant's real gRPC protocol.

No Qdrant server binary can be installed on the machines catena is built and tested on, so the Qdrant store's
tests talk to this process instead. It is split in two, and only the front is ours:

* The front, this file, is test code. It serves the gRPC services of Qdrant's published protocol with the
  server stubs generated from Qdrant's .proto files that ship in the PyPI package `qdrant-client`
  (`qdrant_client.grpc`), and turns each request into the engine's call with the package's own converters
  (`GrpcToRest`) and each answer back into the protocol's messages (`RestToGrpc`).
* The engine is Qdrant's local mode, `qdrant_client.local.qdrant_local.QdrantLocal`, from the same package:
  exact (brute-force) search, Qdrant's filter semantics, in memory or persisted in a folder (`--path`).
  Install it with `bash .ci/setup-qdrant.sh`.

Served RPCs:

* qdrant.Qdrant: HealthCheck.
* qdrant.Collections: Create, Get, List, Delete, CollectionExists, Update.
* qdrant.Points: Upsert, Delete, Get, UpdateVectors, DeleteVectors, SetPayload, OverwritePayload,
  DeletePayload, ClearPayload, CreateFieldIndex, DeleteFieldIndex, Search, SearchBatch, Scroll, Count,
  UpdateBatch, Query, QueryBatch, Facet.

Every other RPC of these services and of qdrant.Snapshots answers UNIMPLEMENTED with a message naming it.

What the front adds to the engine: local mode has no cluster, so the cluster settings of Create (shard_number,
replication_factor, write_consistency_factor, on_disk_payload) are accepted, recorded and reported back by Get;
local mode keeps no payload indexes (except text indexes with `scoring`, which enable text (BM25) queries),
so CreateFieldIndex/DeleteFieldIndex are passed on, recorded and reported in Get's `payload_schema`. With
`--path` these records are kept beside the engine's files. Errors follow the server's: a missing collection
is NOT_FOUND "Not found: Collection `x` doesn't exist!", a bad request (e.g. a wrong vector dimension) is
INVALID_ARGUMENT with the engine's message; a request never takes the server down.

    python3 qdrant_server.py --port N [--path DIR]

prints `qdrant-grpc listening on 127.0.0.1:N` once it serves, and exits when its standard input reaches EOF
(so a test process that dies takes it down; `--ignore-stdin` turns that off) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import sys
import threading
import time
import warnings
from concurrent import futures
from typing import Any, Callable

import grpc as grpcio
import pydantic

from qdrant_client import grpc as pb
from qdrant_client.conversions.conversion import (
    GrpcToRest,
    RestToGrpc,
    grpc_field_type_to_payload_schema,
    grpc_to_payload,
)
from qdrant_client.grpc import (
    collections_service_pb2_grpc,
    points_service_pb2_grpc,
    qdrant_pb2_grpc,
    snapshots_service_pb2_grpc,
)
from qdrant_client.http import models as rest
from qdrant_client.local.qdrant_local import QdrantLocal

# the engine warns that payload indexes and search params have no effect in local mode: known, and noise here
warnings.filterwarnings("ignore", category=UserWarning)

SIDECAR = "catena-grpc-front.json"
INFERENCE_TYPES = (rest.Document, rest.Image, rest.InferenceObject)


class FrontError(Exception):
    """An error answered with a gRPC status."""

    def __init__(self, code: grpcio.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(name: str) -> FrontError:
    return FrontError(grpcio.StatusCode.NOT_FOUND, f"Not found: Collection `{name}` doesn't exist!")


_ENGINE_NOT_FOUND = re.compile(r"^Collection (.*) not found$")
_ENGINE_EXISTS = re.compile(r"^(?:Collection|Alias) (.*) already exists$")


def status_of(error: BaseException) -> tuple[grpcio.StatusCode, str]:
    """The gRPC status the server would answer for an engine or conversion error."""
    if isinstance(error, FrontError):
        return error.code, error.message
    if isinstance(error, NotImplementedError):
        return grpcio.StatusCode.UNIMPLEMENTED, str(error) or "not implemented"
    message = str(error) or type(error).__name__
    if isinstance(error, ValueError):  # pydantic's ValidationError is a ValueError too
        if m := _ENGINE_NOT_FOUND.match(message):
            return not_found(m.group(1)).code, not_found(m.group(1)).message
        if m := _ENGINE_EXISTS.match(message):
            return grpcio.StatusCode.ALREADY_EXISTS, f"Wrong input: Collection `{m.group(1)}` already exists!"
        return grpcio.StatusCode.INVALID_ARGUMENT, message
    if isinstance(error, (TypeError, KeyError, IndexError, AssertionError)):
        return grpcio.StatusCode.INVALID_ARGUMENT, message
    return grpcio.StatusCode.INTERNAL, f"{type(error).__name__}: {message}"


def _rest_type_name(model: Any) -> str:
    return type(model).__name__


def reject_inference(value: Any) -> None:
    """Local mode cannot embed documents, images or objects: that is the server's (or fastembed's) inference."""
    if isinstance(value, INFERENCE_TYPES):
        raise FrontError(
            grpcio.StatusCode.UNIMPLEMENTED,
            f"inference of {_rest_type_name(value)} is not supported by the local-mode test server",
        )
    if isinstance(value, dict):
        for item in value.values():
            reject_inference(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            reject_inference(item)
    elif isinstance(value, pydantic.BaseModel):
        for name in type(value).model_fields:
            reject_inference(getattr(value, name))


def opt(message: Any, field: str, convert: Callable[[Any], Any] | None = None, default: Any = None) -> Any:
    """The converted value of an optional field, or `default` when it is not set."""
    if not message.HasField(field):
        return default
    value = getattr(message, field)
    return convert(value) if convert is not None else value


def dense_sizes(engine: QdrantLocal, name: str) -> dict[str, int]:
    """The size of each dense (not multi-) vector of a collection, by name ('' for the unnamed one)."""
    vectors = engine.get_collection(name).config.params.vectors
    if isinstance(vectors, rest.VectorParams):
        vectors = {"": vectors}
    return {n: v.size for n, v in (vectors or {}).items() if v.multivector_config is None}


def check_query_dims(sizes: dict[str, int], query: Any, using: str | None, prefetch: Any = None) -> None:
    """Reject a dense nearest query of the wrong size as the server does (the engine would fail in numpy)."""
    if isinstance(query, rest.NearestQuery):
        vector = query.nearest
        expected = sizes.get(using or "")
        if (
            expected is not None
            and isinstance(vector, list)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector)
            and len(vector) != expected
        ):
            raise FrontError(
                grpcio.StatusCode.INVALID_ARGUMENT,
                f"Wrong input: Vector dimension error: expected dim: {expected}, got {len(vector)}",
            )
    for item in prefetch or []:
        check_query_dims(sizes, item.query, item.using, item.prefetch)


def filter_of(message: Any, field: str = "filter") -> rest.Filter | None:
    return opt(message, field, GrpcToRest.convert_filter)


def with_payload_of(message: Any, default: Any) -> Any:
    return opt(message, "with_payload", GrpcToRest.convert_with_payload_interface, default)


def with_vectors_of(message: Any, default: Any = False) -> Any:
    return opt(message, "with_vectors", GrpcToRest.convert_with_vectors_selector, default)


def scored_points(points: list[rest.ScoredPoint]) -> list[pb.ScoredPoint]:
    out = []
    for point in points:
        if point.payload is None:
            point.payload = {}
        out.append(RestToGrpc.convert_scored_point(point))
    return out


def records(points: list[rest.Record]) -> list[pb.RetrievedPoint]:
    out = []
    for point in points:
        if point.payload is None:
            point.payload = {}
        out.append(RestToGrpc.convert_record(point))
    return out


class Front:
    """The engine, its lock, and what the front records beside it."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.engine = QdrantLocal(path or ":memory:", force_disable_check_same_thread=True)
        self.lock = threading.RLock()
        self.operation_id = 0
        # collection name -> {"params": {...cluster settings...}, "indexes": {field: PayloadIndexInfo json}}
        self.records: dict[str, dict[str, Any]] = {}
        if path is not None:
            try:
                with open(os.path.join(path, SIDECAR)) as f:
                    self.records = json.load(f)
            except FileNotFoundError:
                pass
            self.records = {k: v for k, v in self.records.items() if k in self.engine.collections}

    def save_records(self) -> None:
        if self.path is None:
            return
        tmp = os.path.join(self.path, SIDECAR + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.records, f)
        os.replace(tmp, os.path.join(self.path, SIDECAR))

    def resolve(self, name: str) -> str:
        """The real name of an existing collection (or alias), else NOT_FOUND."""
        if name in self.engine.collections:
            return name
        if name in self.engine.aliases:
            return self.engine.aliases[name]
        raise not_found(name)

    def update_result(self, wait: bool) -> pb.UpdateResult:
        self.operation_id += 1
        status = pb.UpdateStatus.Completed if wait else pb.UpdateStatus.Acknowledged
        return pb.UpdateResult(operation_id=self.operation_id, status=status)

    def record(self, name: str) -> dict[str, Any]:
        return self.records.setdefault(name, {"params": {}, "indexes": {}})


def rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Runs a handler under the engine's lock, fills `time`, and answers errors with a status."""

    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpcio.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            with self.front.lock:
                response = method(self, request)
        except Exception as error:  # noqa: BLE001 - every error becomes a status, never a crash
            code, message = status_of(error)
            context.abort(code, message)
        if "time" in type(response).DESCRIPTOR.fields_by_name:
            response.time = time.perf_counter() - start
        return response

    return handler


def unimplemented(servicer_cls: type, service: str) -> type:
    """Makes every RPC of `servicer_cls` that the class itself does not define answer UNIMPLEMENTED, naming it."""
    base = servicer_cls.__mro__[1]
    for name, member in vars(base).items():
        if name.startswith("_") or not callable(member) or name in vars(servicer_cls):
            continue

        def refuse(self: Any, request: Any, context: grpcio.ServicerContext, _rpc: str = f"{service}/{name}") -> Any:
            context.abort(
                grpcio.StatusCode.UNIMPLEMENTED,
                f"{_rpc} is not implemented by the local-mode Qdrant test server",
            )

        setattr(servicer_cls, name, refuse)
    return servicer_cls


class QdrantService(qdrant_pb2_grpc.QdrantServicer):
    def __init__(self, front: Front) -> None:
        self.front = front

    @rpc
    def HealthCheck(self, request: pb.HealthCheckRequest) -> pb.HealthCheckReply:
        info = self.front.engine.info()
        return pb.HealthCheckReply(title=info.title, version=info.version)


class CollectionsService(collections_service_pb2_grpc.CollectionsServicer):
    def __init__(self, front: Front) -> None:
        self.front = front

    @rpc
    def Create(self, request: pb.CreateCollection) -> pb.CollectionOperationResponse:
        front = self.front
        name = request.collection_name
        if name in front.engine.collections or name in front.engine.aliases:
            raise FrontError(grpcio.StatusCode.ALREADY_EXISTS, f"Wrong input: Collection `{name}` already exists!")
        vectors = opt(request, "vectors_config", GrpcToRest.convert_vectors_config)
        sparse = opt(request, "sparse_vectors_config", GrpcToRest.convert_sparse_vector_config)
        metadata = grpc_to_payload(request.metadata) if len(request.metadata) > 0 else None
        front.engine.create_collection(
            name, vectors_config=vectors, sparse_vectors_config=sparse, metadata=metadata
        )
        # no cluster in local mode: the settings are accepted and reported back as given
        front.records[name] = {
            "params": {
                "shard_number": opt(request, "shard_number", default=1),
                "replication_factor": opt(request, "replication_factor", default=1),
                "write_consistency_factor": opt(request, "write_consistency_factor", default=1),
                "on_disk_payload": opt(request, "on_disk_payload", default=True),
            },
            "indexes": {},
        }
        front.save_records()
        return pb.CollectionOperationResponse(result=True)

    @rpc
    def Get(self, request: pb.GetCollectionInfoRequest) -> pb.GetCollectionInfoResponse:
        front = self.front
        name = front.resolve(request.collection_name)
        info = front.engine.get_collection(name)
        record = front.record(name)
        params = info.config.params
        for key, value in record["params"].items():
            setattr(params, key, value)
        info.payload_schema = {
            field: rest.PayloadIndexInfo.model_validate(index) for field, index in record["indexes"].items()
        }
        for field, index in info.payload_schema.items():
            index.points = self._indexed_points(name, field)
        return pb.GetCollectionInfoResponse(result=RestToGrpc.convert_collection_info(info))

    def _indexed_points(self, name: str, field: str) -> int:
        has_field = rest.Filter(must_not=[rest.IsEmptyCondition(is_empty=rest.PayloadField(key=field))])
        return self.front.engine.count(name, count_filter=has_field).count

    @rpc
    def List(self, request: pb.ListCollectionsRequest) -> pb.ListCollectionsResponse:
        names = [c.name for c in self.front.engine.get_collections().collections]
        return pb.ListCollectionsResponse(collections=[pb.CollectionDescription(name=n) for n in names])

    @rpc
    def Delete(self, request: pb.DeleteCollection) -> pb.CollectionOperationResponse:
        front = self.front
        existed = front.engine.delete_collection(request.collection_name)
        if front.records.pop(request.collection_name, None) is not None:
            front.save_records()
        return pb.CollectionOperationResponse(result=existed)

    @rpc
    def CollectionExists(self, request: pb.CollectionExistsRequest) -> pb.CollectionExistsResponse:
        exists = self.front.engine.collection_exists(request.collection_name)
        return pb.CollectionExistsResponse(result=pb.CollectionExists(exists=exists))

    @rpc
    def Update(self, request: pb.UpdateCollection) -> pb.CollectionOperationResponse:
        front = self.front
        name = front.resolve(request.collection_name)
        update = GrpcToRest.convert_update_collection(request)
        # optimizer, HNSW, quantization and strict-mode settings mean nothing to exact local search:
        # accepted; sparse-vector params and metadata are applied by the engine
        front.engine.update_collection(
            name,
            sparse_vectors_config=update.sparse_vectors,
            metadata=update.metadata,
            vectors_config=update.vectors,
        )
        return pb.CollectionOperationResponse(result=True)


class PointsService(points_service_pb2_grpc.PointsServicer):
    def __init__(self, front: Front) -> None:
        self.front = front

    # ---- writes

    def _operation(self, request: Any) -> pb.PointsOperationResponse:
        return pb.PointsOperationResponse(result=self.front.update_result(opt(request, "wait", default=False)))

    @rpc
    def Upsert(self, request: pb.UpsertPoints) -> pb.PointsOperationResponse:
        name = self.front.resolve(request.collection_name)
        points = [GrpcToRest.convert_point_struct(p) for p in request.points]
        reject_inference(points)
        self.front.engine.upsert(
            name,
            points,
            update_filter=filter_of(request, "update_filter"),
            update_mode=opt(request, "update_mode", GrpcToRest.convert_update_mode),
        )
        return self._operation(request)

    @rpc
    def Delete(self, request: pb.DeletePoints) -> pb.PointsOperationResponse:
        name = self.front.resolve(request.collection_name)
        self.front.engine.delete(name, GrpcToRest.convert_points_selector(request.points))
        return self._operation(request)

    @rpc
    def UpdateVectors(self, request: pb.UpdatePointVectors) -> pb.PointsOperationResponse:
        name = self.front.resolve(request.collection_name)
        points = [GrpcToRest.convert_point_vectors(p) for p in request.points]
        reject_inference(points)
        self.front.engine.update_vectors(name, points, update_filter=filter_of(request, "update_filter"))
        return self._operation(request)

    @rpc
    def DeleteVectors(self, request: pb.DeletePointVectors) -> pb.PointsOperationResponse:
        name = self.front.resolve(request.collection_name)
        self.front.engine.delete_vectors(
            name,
            GrpcToRest.convert_vectors_selector(request.vectors),
            GrpcToRest.convert_points_selector(request.points_selector),
        )
        return self._operation(request)

    def _selector(self, request: Any) -> Any:
        if not request.HasField("points_selector"):
            raise FrontError(grpcio.StatusCode.INVALID_ARGUMENT, "points_selector is required")
        return GrpcToRest.convert_points_selector(request.points_selector)

    @rpc
    def SetPayload(self, request: pb.SetPayloadPoints) -> pb.PointsOperationResponse:
        name = self.front.resolve(request.collection_name)
        self.front.engine.set_payload(
            name, grpc_to_payload(request.payload), self._selector(request), key=opt(request, "key")
        )
        return self._operation(request)

    @rpc
    def OverwritePayload(self, request: pb.SetPayloadPoints) -> pb.PointsOperationResponse:
        name = self.front.resolve(request.collection_name)
        self.front.engine.overwrite_payload(name, grpc_to_payload(request.payload), self._selector(request))
        return self._operation(request)

    @rpc
    def DeletePayload(self, request: pb.DeletePayloadPoints) -> pb.PointsOperationResponse:
        name = self.front.resolve(request.collection_name)
        self.front.engine.delete_payload(name, list(request.keys), self._selector(request))
        return self._operation(request)

    @rpc
    def ClearPayload(self, request: pb.ClearPayloadPoints) -> pb.PointsOperationResponse:
        name = self.front.resolve(request.collection_name)
        self.front.engine.clear_payload(name, GrpcToRest.convert_points_selector(request.points))
        return self._operation(request)

    @rpc
    def UpdateBatch(self, request: pb.UpdateBatchPoints) -> pb.UpdateBatchResponse:
        name = self.front.resolve(request.collection_name)
        operations = [GrpcToRest.convert_points_update_operation(op) for op in request.operations]
        reject_inference(operations)
        self.front.engine.batch_update_points(name, operations)
        wait = opt(request, "wait", default=False)
        return pb.UpdateBatchResponse(result=[self.front.update_result(wait) for _ in operations])

    @rpc
    def CreateFieldIndex(self, request: pb.CreateFieldIndexCollection) -> pb.PointsOperationResponse:
        front = self.front
        name = front.resolve(request.collection_name)
        params = opt(request, "field_index_params", GrpcToRest.convert_payload_schema_params)
        if request.HasField("field_type"):
            data_type = GrpcToRest.convert_payload_schema_type(grpc_field_type_to_payload_schema(request.field_type))
        elif params is not None:
            data_type = rest.PayloadSchemaType(params.type)
        else:
            raise FrontError(grpcio.StatusCode.INVALID_ARGUMENT, "field_type or field_index_params is required")
        # the engine keeps only text indexes with `scoring` (for text queries); it accepts every index
        front.engine.create_payload_index(name, request.field_name, field_schema=params or data_type)
        front.record(name)["indexes"][request.field_name] = rest.PayloadIndexInfo(
            data_type=data_type, params=params, points=0
        ).model_dump(mode="json", exclude_none=True)
        front.save_records()
        return self._operation(request)

    @rpc
    def DeleteFieldIndex(self, request: pb.DeleteFieldIndexCollection) -> pb.PointsOperationResponse:
        front = self.front
        name = front.resolve(request.collection_name)
        front.engine.delete_payload_index(name, request.field_name)
        front.record(name)["indexes"].pop(request.field_name, None)
        front.save_records()
        return self._operation(request)

    # ---- reads

    @rpc
    def Get(self, request: pb.GetPoints) -> pb.GetResponse:
        name = self.front.resolve(request.collection_name)
        points = self.front.engine.retrieve(
            name,
            [GrpcToRest.convert_point_id(i) for i in request.ids],
            with_payload=with_payload_of(request, True),
            with_vectors=with_vectors_of(request),
        )
        return pb.GetResponse(result=records(points))

    @rpc
    def Scroll(self, request: pb.ScrollPoints) -> pb.ScrollResponse:
        name = self.front.resolve(request.collection_name)
        points, next_offset = self.front.engine.scroll(
            name,
            scroll_filter=filter_of(request),
            limit=opt(request, "limit", default=10),
            order_by=opt(request, "order_by", GrpcToRest.convert_order_by),
            offset=opt(request, "offset", GrpcToRest.convert_point_id),
            with_payload=with_payload_of(request, True),
            with_vectors=with_vectors_of(request),
        )
        response = pb.ScrollResponse(result=records(points))
        if next_offset is not None:
            response.next_page_offset.CopyFrom(RestToGrpc.convert_extended_point_id(next_offset))
        return response

    @rpc
    def Count(self, request: pb.CountPoints) -> pb.CountResponse:
        name = self.front.resolve(request.collection_name)
        result = self.front.engine.count(name, count_filter=filter_of(request), exact=True)
        return pb.CountResponse(result=pb.CountResult(count=result.count))

    @rpc
    def Facet(self, request: pb.FacetCounts) -> pb.FacetResponse:
        name = self.front.resolve(request.collection_name)
        result = self.front.engine.facet(
            name, request.key, facet_filter=filter_of(request), limit=opt(request, "limit", default=10)
        )
        return pb.FacetResponse(hits=[RestToGrpc.convert_facet_value_hit(h) for h in result.hits])

    def _query(self, name: str, request: pb.QueryPoints) -> list[pb.ScoredPoint]:
        query = GrpcToRest.convert_query_points(request)
        reject_inference(query)
        check_query_dims(dense_sizes(self.front.engine, name), query.query, query.using, query.prefetch)
        response = self.front.engine.query_points(
            name,
            query=query.query,
            using=query.using,
            prefetch=query.prefetch,
            query_filter=query.filter,
            search_params=query.params,
            limit=query.limit if query.limit is not None else 10,
            offset=query.offset,
            with_payload=query.with_payload if query.with_payload is not None else False,
            with_vectors=query.with_vector if query.with_vector is not None else False,
            score_threshold=query.score_threshold,
            lookup_from=query.lookup_from,
        )
        return scored_points(response.points)

    @rpc
    def Query(self, request: pb.QueryPoints) -> pb.QueryResponse:
        return pb.QueryResponse(result=self._query(self.front.resolve(request.collection_name), request))

    @rpc
    def QueryBatch(self, request: pb.QueryBatchPoints) -> pb.QueryBatchResponse:
        name = self.front.resolve(request.collection_name)
        return pb.QueryBatchResponse(
            result=[pb.BatchResult(result=self._query(name, q)) for q in request.query_points]
        )

    def _search(self, name: str, request: pb.SearchPoints) -> list[pb.ScoredPoint]:
        vector: Any = list(request.vector)
        if request.HasField("sparse_indices"):
            vector = rest.SparseVector(indices=list(request.sparse_indices.data), values=vector)
        using = opt(request, "vector_name")
        check_query_dims(dense_sizes(self.front.engine, name), rest.NearestQuery(nearest=vector), using)
        response = self.front.engine.query_points(
            name,
            query=rest.NearestQuery(nearest=vector),
            using=using,
            query_filter=filter_of(request),
            search_params=opt(request, "params", GrpcToRest.convert_search_params),
            limit=request.limit,
            offset=opt(request, "offset"),
            with_payload=with_payload_of(request, False),
            with_vectors=with_vectors_of(request),
            score_threshold=opt(request, "score_threshold"),
        )
        return scored_points(response.points)

    @rpc
    def Search(self, request: pb.SearchPoints) -> pb.SearchResponse:
        return pb.SearchResponse(result=self._search(self.front.resolve(request.collection_name), request))

    @rpc
    def SearchBatch(self, request: pb.SearchBatchPoints) -> pb.SearchBatchResponse:
        name = self.front.resolve(request.collection_name)
        return pb.SearchBatchResponse(
            result=[pb.BatchResult(result=self._search(name, s)) for s in request.search_points]
        )


class SnapshotsService(snapshots_service_pb2_grpc.SnapshotsServicer):
    pass


def serve(port: int, path: str | None, watch_stdin: bool) -> None:
    if path is not None:
        os.makedirs(path, exist_ok=True)
    front = Front(path)
    server = grpcio.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    qdrant_pb2_grpc.add_QdrantServicer_to_server(unimplemented(QdrantService, "qdrant.Qdrant")(front), server)
    collections_service_pb2_grpc.add_CollectionsServicer_to_server(
        unimplemented(CollectionsService, "qdrant.Collections")(front), server
    )
    points_service_pb2_grpc.add_PointsServicer_to_server(unimplemented(PointsService, "qdrant.Points")(front), server)
    snapshots_service_pb2_grpc.add_SnapshotsServicer_to_server(
        unimplemented(SnapshotsService, "qdrant.Snapshots")(), server
    )
    address = f"127.0.0.1:{port}"
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"qdrant_server.py: cannot bind {address}")
    server.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if watch_stdin:

        def watchdog() -> None:
            try:
                while sys.stdin.buffer.read(65536):
                    pass
            finally:
                os._exit(0)

        threading.Thread(target=watchdog, name="stdin-watchdog", daemon=True).start()

    print(f"qdrant-grpc listening on {address}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop(grace=1.0).wait()
    with front.lock:
        front.engine.close()
    # not a normal interpreter exit: the watchdog thread holds stdin's lock, which finalization would wait on
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description="Qdrant's local-mode engine behind Qdrant's gRPC protocol (tests).")
    parser.add_argument("--port", type=int, required=True, help="port to bind on 127.0.0.1")
    parser.add_argument("--path", help="folder to persist the collections in (default: in memory)")
    parser.add_argument("--ignore-stdin", action="store_true", help="keep running when standard input reaches EOF")
    args = parser.parse_args()
    serve(args.port, args.path, not args.ignore_stdin)


if __name__ == "__main__":
    main()
