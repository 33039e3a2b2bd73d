"""The HTTP server's application: JSON schema, micro-batcher, routes, errors and auth.

``python -m pubmedqa_peft.serve`` (:mod:`pubmedqa_peft.serve`) loads a
:class:`~pubmedqa_peft.serving.predictor.Predictor` and runs :func:`create_app` under
uvicorn. Endpoints:

- ``POST /v1/predict``: ``{"items": [{"question": ..., "context": ...}, ...], "method": ...}``
  (:class:`PredictRequest`) -> ``{"predictions": [...]}`` (:class:`PredictResponse`), one
  prediction per item, in order.
- ``GET /v1/models``: the loaded methods, each with its ``run.json`` manifest and tau.
- ``GET /health``: liveness and queue depth (never needs the API key).

Concurrent requests are micro-batched by :class:`MicroBatcher`: the first waiting item
opens a batch, which is scored once it holds ``max_batch`` items or ``max_wait_ms`` has
passed, whichever comes first, in the one worker thread that ever calls the predictor
(it is not thread-safe). While that thread scores, new requests queue up, so under load
batches fill without waiting and throughput approaches offline batch scoring.

Every error is a JSON body ``{"error": {"type", "field", "message"}}`` with a 4xx status
for a bad request (naming the field or header at fault) and 5xx for a failure on our
side; a scoring failure fails only the requests in that batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from pubmedqa_peft.stage import PipelineError, one_line

log = logging.getLogger("pubmedqa_peft.serve")

API_KEY_ENV = "PUBMEDQA_API_KEY"
"""Environment variable holding the bearer token; unset or empty means no authentication."""


# --- the JSON schema -------------------------------------------------------------------------


class Item(BaseModel):
    """One question to answer from its abstract."""

    model_config = ConfigDict(extra="forbid")

    question: StrictStr = Field(
        min_length=1,
        description="The research question (not blank).",
        examples=["Do mitochondria play a role in remodelling lace plant leaves during programmed cell death?"],
    )
    context: StrictStr | list[StrictStr] = Field(
        description="The abstract: one text, or its passages as a list (joined with single spaces, as the data "
        "stage joins PubMedQA's CONTEXTS). Cut at the end if the prompt would exceed the model's max length.",
        examples=["Programmed cell death (PCD) is the regulated death of cells within an organism. ..."],
    )
    id: StrictStr | StrictInt | None = Field(default=None, description="Optional; echoed in the item's prediction.")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("context")
    @classmethod
    def _context_not_blank(cls, value: str | list[str]) -> str | list[str]:
        text = value if isinstance(value, str) else " ".join(value)
        if not text.strip():
            raise ValueError("must not be blank (or an empty list)")
        return value


class PredictRequest(BaseModel):
    """Body of ``POST /v1/predict``: one or many items, all answered by one method."""

    model_config = ConfigDict(extra="forbid")

    items: list[Item] = Field(
        min_length=1,
        description="The items to answer (at least one; at most the server's --max-items, see GET /v1/models).",
    )
    method: StrictStr | None = Field(
        default=None,
        description="A loaded method (GET /v1/models); may be left out when the server loaded only one.",
    )


class Prediction(BaseModel):
    """The answer for one item."""

    model_config = ConfigDict(extra="allow")

    label: str = Field(description="The most probable label (one of the labels in the run.json, e.g. yes or no).")
    probabilities: dict[str, float] = Field(description="P(label) for every label of the model; they sum to 1.")
    confidence: float = Field(description="The largest probability.")
    abstained: bool = Field(description="confidence < the method's tau: the model is unsure, do not use the label.")
    method: str = Field(description="The method that answered.")
    model: str = Field(description="Its base model.")
    id: str | int | None = Field(default=None, description="The item's id, when it had one.")


class PredictResponse(BaseModel):
    """Body of a successful ``POST /v1/predict``."""

    predictions: list[Prediction] = Field(description="One per request item, in the same order.")


class ErrorDetail(BaseModel):
    """What went wrong."""

    type: str = Field(description="A stable machine-readable kind, e.g. invalid_field, body_too_large.")
    field: str | None = Field(description="The field or header at fault (items[2].question, Content-Type), or null.")
    message: str = Field(description="One line for people.")


class ErrorResponse(BaseModel):
    """Body of every error response (4xx and 5xx)."""

    error: ErrorDetail


class ApiError(Exception):
    """An error answered to the client as :class:`ErrorResponse` with ``status``."""

    def __init__(self, status: int, type_: str, message: str, field: str | None = None, **headers: str) -> None:
        # Every message names its field first, as pydantic's do: "items[2].question: ...".
        if field and not message.startswith(f"{field}:"):
            message = f"{field}: {message}"
        super().__init__(message)
        self.status, self.type, self.message, self.field = status, type_, one_line(message), field
        self.headers = {k.replace("_", "-"): v for k, v in headers.items()}

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        body = ErrorResponse(error=ErrorDetail(type=self.type, field=self.field, message=self.message))
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers or None)


# --- the micro-batcher -------------------------------------------------------------------------


class ServerBusyError(PipelineError):
    """The queue is full: the request is refused before it is accepted (HTTP 503)."""


class ShuttingDownError(PipelineError):
    """The batcher is closed: the request is refused before it is accepted (HTTP 503)."""


Scorer = Callable[[list[dict[str, Any]], str], list[Any]]
"""``score(items, method) -> one result per item``: the predictor's ``predict``."""


@dataclass
class _Job:
    items: list[dict[str, Any]]
    method: str
    future: concurrent.futures.Future[list[Any]]
    enqueued: float


class MicroBatcher:
    """Groups concurrent requests into batches scored one at a time in one worker thread.

    A request (a *job*: one or more items for one method) is accepted by :meth:`submit`,
    which returns a future for its results. The worker takes the oldest jobs as one batch:
    once at least one job waits, it waits until ``max_batch`` items are queued or
    ``max_wait_ms`` has passed since it started waiting, then takes jobs in arrival order
    while they fit in ``max_batch`` items (a job is never split; one larger than
    ``max_batch`` is a batch of its own). A batch holding several methods is scored with
    one call per method. If a call raises, exactly its jobs' futures get the exception
    (for an ``isolate`` error, each job is first retried alone to find the culprit).

    Every accepted job is answered: :meth:`close` stops accepting, scores what is
    queued and only then stops the worker.
    """

    def __init__(
        self,
        score: Scorer,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 2.0,
        max_queue: int = 1024,
        isolate: tuple[type[Exception], ...] = (),
    ) -> None:
        """Set up the batcher (call :meth:`start` to run it).

        Args:
            score: Scores one batch of one method; called only from the worker thread.
            max_batch: Items per batch at most (a larger single request is scored alone).
            max_wait_ms: How long the first waiting item waits for the batch to fill.
            max_queue: Items waiting at most; beyond it :meth:`submit` refuses (backpressure).
            isolate: Errors that one request's items cause (a bad item only the model can
                see, such as a question too long for it): when a batch of several requests
                raises one, each request is scored again alone, so only the culprit fails.

        Raises:
            ValueError: If a limit is out of range.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue < max_batch:
            raise ValueError(f"max_queue ({max_queue}) must be >= max_batch ({max_batch})")
        self._score = score
        self._isolate = isolate
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        # Counters (read by /health and the shutdown log line; written under the lock).
        self.accepted = self.answered = self.failed = self.batches = self.items = 0

    @property
    def queued_items(self) -> int:
        """Items waiting to be scored."""
        return self._queued

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)
            self._thread.start()

    def submit(self, items: Sequence[dict[str, Any]], method: str) -> concurrent.futures.Future[list[Any]]:
        """Accept one request; its future resolves to one result per item (or the scorer's exception).

        Raises:
            ShuttingDownError: After :meth:`close`.
            ServerBusyError: If the queue would hold more than ``max_queue`` items.
        """
        future: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()
        with self._cond:
            if self._closing:
                raise ShuttingDownError("the server is shutting down")
            if self._queued + len(items) > self.max_queue:
                raise ServerBusyError(f"the queue is full ({self._queued} items waiting); retry later")
            self._jobs.append(_Job(list(items), method, future, time.perf_counter()))
            self._queued += len(items)
            self.accepted += 1
            self._cond.notify()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, answer every queued job, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _take(self) -> list[_Job] | None:
        """The next batch of jobs, waiting for it; None once closed and drained."""
        with self._cond:
            while not self._jobs:
                if self._closing:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            while self._queued < self.max_batch and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch, size = [], 0
            while self._jobs and (not batch or size + len(self._jobs[0].items) <= self.max_batch):
                job = self._jobs.popleft()
                self._queued -= len(job.items)
                # A future cancelled by its caller (gone) is skipped; the rest can no longer be cancelled.
                if job.future.set_running_or_notify_cancel():
                    batch.append(job)
                    size += len(job.items)
            return batch

    def _fail(self, method: str, jobs: list[_Job], items: list[Any], start: float, err: Exception) -> None:
        log.error(
            "batch failed: %d items, %d requests, method %s, after %.1f ms: %s: %s",
            len(items),
            len(jobs),
            method,
            (time.perf_counter() - start) * 1000,
            type(err).__name__,
            one_line(str(err)),
        )
        with self._cond:
            self.batches += 1
            self.failed += len(jobs)
        for job in jobs:
            job.future.set_exception(err)

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            by_method: dict[str, list[_Job]] = {}
            for job in batch:
                by_method.setdefault(job.method, []).append(job)
            for method, jobs in by_method.items():
                self._score_jobs(method, jobs)

    def _score_jobs(self, method: str, jobs: list[_Job]) -> None:
        items = [item for job in jobs for item in job.items]
        start = time.perf_counter()
        waited = start - min(job.enqueued for job in jobs)
        try:
            results = self._score(items, method)
            if len(results) != len(items):
                raise RuntimeError(f"the scorer returned {len(results)} results for {len(items)} items")
        except self._isolate as err:
            if len(jobs) > 1:
                log.info("batch of %d requests: %s; scoring them one by one", len(jobs), one_line(str(err)))
                for job in jobs:
                    self._score_jobs(method, [job])
                return
            self._fail(method, jobs, items, start, err)
            return
        except Exception as err:  # any other failure fails exactly this batch's requests
            self._fail(method, jobs, items, start, err)
            return
        seconds = time.perf_counter() - start
        log.info(
            "batch: %d items, %d requests, method %s, waited %.1f ms, scored in %.1f ms",
            len(items),
            len(jobs),
            method,
            waited * 1000,
            seconds * 1000,
        )
        with self._cond:
            self.batches += 1
            self.items += len(items)
            self.answered += len(jobs)
        offset = 0
        for job in jobs:
            job.future.set_result(list(results[offset : offset + len(job.items)]))
            offset += len(job.items)


# --- the application ---------------------------------------------------------------------------


class PredictorLike(Protocol):
    """What the server needs of :class:`~pubmedqa_peft.serving.predictor.Predictor`."""

    methods: list[str]

    def describe(self) -> dict[str, dict]:
        """Per method: its manifest and tau."""

    def predict(self, items: Sequence[Mapping[str, Any]], method: str | None = None) -> list[dict]:
        """One prediction per item (called from one thread at a time)."""

    def validate(self, items: Sequence[Mapping[str, Any]]) -> list[dict]:
        """The item checks alone; raises a ``PipelineError`` naming the item and field."""


@dataclass(frozen=True)
class Limits:
    """The server's knobs (``python -m pubmedqa_peft.serve --help`` documents each)."""

    max_batch: int = 16
    """16 = two forward passes of 8 (the predictor's batch size) at once, one per core of a 2-core CPU: a
    full batch keeps every scoring worker busy (``scoring.cpu_workers``); raise it on bigger machines."""
    max_wait_ms: float = 2.0
    max_items: int = 64
    max_body_bytes: int = 1 << 20
    max_queue: int = 1024

    def check(self) -> None:
        """Raise ``ValueError`` naming the first knob out of range."""
        for name in ("max_batch", "max_items", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")
        if self.max_queue < max(self.max_batch, self.max_items):
            raise ValueError(f"--max-queue ({self.max_queue}) must be >= --max-batch and --max-items")


_UNION_TAGS = ("str", "list[str]")
"""Location parts pydantic adds for the members of ``str | list[str]`` (not field names)."""


def _field(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a path: ``("items", 2, "question")`` -> ``items[2].question``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_error(err: ValidationError) -> ApiError:
    """The first problem pydantic found, as a 422 naming its field."""
    errors = err.errors(include_url=False)
    first = errors[0]
    loc, message = list(first["loc"]), first["msg"].removeprefix("Value error, ")
    # A union (context: str | list[str]) reports one error per member, each under the member's
    # tag; name the element at fault when the value is a list, else say what the field takes.
    tag_at = next((i for i, part in enumerate(loc) if part in _UNION_TAGS), None)
    if tag_at is not None:
        prefix = loc[:tag_at]
        in_list = [e for e in errors if list(e["loc"][: tag_at + 1]) == [*prefix, "list[str]"]]
        if isinstance(first["input"], list) and in_list:
            loc, message = prefix + list(in_list[0]["loc"][tag_at + 1 :]), "must be a string"
        else:
            loc, message = prefix, "must be a string or a list of strings"
    field = _field(loc) or "body"
    kind = {"missing": "missing_field", "extra_forbidden": "unknown_field"}.get(first["type"], "invalid_field")
    if first["type"] == "extra_forbidden":
        message = "unknown field (allowed: question and context in an item; items and method at the top level)"
    return ApiError(422, kind, f"{field}: {message}", field)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid_header", f"not a number: {declared!r}", "Content-Length")
        if int(declared) > limit:
            raise ApiError(
                413, "body_too_large", f"request body is {declared} bytes; the limit is {limit}", "Content-Length"
            )
    body = bytearray()
    async for chunk in request.stream():  # also bounds a chunked body, whose length is not declared
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"exceeds the limit of {limit} bytes", "body")
    return bytes(body)


def _item_error(err: Exception) -> ApiError:
    """A 422 for the predictor's bad-item error, whose message names the item and field ("item 3: 'question' ...")."""
    named = re.match(r"item (\d+): '?(\w+)'?", str(err))
    return ApiError(422, "invalid_item", str(err), f"items[{named[1]}].{named[2]}" if named else "items")


def _parse_request(body: bytes, content_type: str) -> PredictRequest:
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, got {content_type!r}",
            "Content-Type",
        )
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ApiError(400, "invalid_json", f"not valid JSON: {err}", "body") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_field", "must be a JSON object with an 'items' list", "body")
    try:
        return PredictRequest.model_validate(payload)
    except ValidationError as err:
        raise _validation_error(err) from None


def create_app(
    predictor: PredictorLike,
    limits: Limits | None = None,
    *,
    api_key: str | None = None,
) -> FastAPI:
    """The FastAPI application serving ``predictor``.

    Its lifespan starts the batcher's worker and, at shutdown (after uvicorn has answered
    every in-flight request), drains and stops it.

    Args:
        predictor: A loaded :class:`~pubmedqa_peft.serving.predictor.Predictor` (or an
            object with the same ``methods``, ``describe``, ``validate`` and ``predict``).
        limits: Batching and request limits (defaults: :class:`Limits`).
        api_key: If set and not empty, ``/v1/*`` requires ``Authorization: Bearer <api_key>``.

    Returns:
        The app; ``app.state.batcher`` is its :class:`MicroBatcher`.
    """
    limits = limits or Limits()
    limits.check()
    from pubmedqa_peft.serving.predictor import BadItemError

    batcher = MicroBatcher(
        lambda items, method: predictor.predict(items, method),
        max_batch=limits.max_batch,
        max_wait_ms=limits.max_wait_ms,
        max_queue=limits.max_queue,
        isolate=(BadItemError,),  # e.g. a question too long for the model: that request's fault alone
    )
    methods = list(predictor.methods)
    key = api_key.encode("utf-8") if api_key else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.close)
            log.info(
                "stopped: %d requests accepted, %d answered, %d failed, %d batches, %d items scored",
                batcher.accepted,
                batcher.answered,
                batcher.failed,
                batcher.batches,
                batcher.items,
            )

    app = FastAPI(
        title="pubmedqa-peft",
        summary="Answers (yes/no or yes/no/maybe) to biomedical questions from fine-tuned models, with abstention.",
        version="1",
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    async def authorize(request: Request) -> None:  # async: checked on the event loop, no thread hop
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Header values arrive decoded as Latin-1: encoding back gives the bytes sent (a UTF-8 key
        # matches). compare_digest takes the same time wherever the bytes differ.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("latin-1"), key):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong bearer token (send Authorization: Bearer <key>)",
                "Authorization",
                WWW_Authenticate="Bearer",
            )

    def resolve_method(method: str | None) -> str:
        if method is None:
            if len(methods) == 1:
                return methods[0]
            raise ApiError(
                422, "missing_field", f"method: required, {len(methods)} are loaded: {', '.join(methods)}", "method"
            )
        if method not in methods:
            raise ApiError(422, "unknown_method", f"method: unknown {method!r}; loaded: {', '.join(methods)}", "method")
        return method

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {err.detail}"
        return ApiError(err.status_code, kind, message, None, **(err.headers or {})).response()

    @app.exception_handler(RequestValidationError)
    async def _request_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        field = _field([p for p in first["loc"] if p != "body"]) or "body"
        return ApiError(422, "invalid_field", f"{field}: {first['msg']}", field).response()

    errors = {s: {"model": ErrorResponse} for s in (400, 401, 413, 415, 422, 500, 503)}
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @v1.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,  # "id" only where the item had one
        responses=errors,  # type: ignore[arg-type]
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
            }
        },
    )
    async def predict(request: Request) -> PredictResponse:
        """Answer one or many items with one method (micro-batched with concurrent requests)."""
        body = await _read_body(request, limits.max_body_bytes)
        req = _parse_request(body, request.headers.get("content-type", ""))
        if len(req.items) > limits.max_items:
            raise ApiError(
                422, "too_many_items", f"items: {len(req.items)} items; at most {limits.max_items} per request", "items"
            )
        method = resolve_method(req.method)
        items = [item.model_dump(exclude_none=True) for item in req.items]
        try:
            items = predictor.validate(items)
        except PipelineError as err:
            raise _item_error(err) from None
        try:
            future = batcher.submit(items, method)
        except (ServerBusyError, ShuttingDownError) as err:
            raise ApiError(503, "unavailable", str(err), None, Retry_After="1") from None
        try:
            results = await asyncio.wrap_future(future)
        except BadItemError as err:
            raise _item_error(err) from None
        except Exception as err:
            raise ApiError(500, "scoring_failed", f"scoring failed: {type(err).__name__}: {err}") from None
        return PredictResponse(predictions=results)

    @v1.get("/models", responses=errors)  # type: ignore[arg-type]
    async def models() -> dict[str, Any]:
        """The loaded methods (each with its run.json manifest and tau) and the request limits."""
        return {
            "methods": predictor.describe(),
            "default_method": methods[0] if len(methods) == 1 else None,
            "limits": {
                "max_items": limits.max_items,
                "max_body_bytes": limits.max_body_bytes,
                "max_batch": limits.max_batch,
                "max_wait_ms": limits.max_wait_ms,
            },
        }

    app.include_router(v1)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: the loaded methods and the queue (no API key needed)."""
        return {
            "status": "ok",
            "methods": methods,
            "queued_items": batcher.queued_items,
            "batches": batcher.batches,
            "auth": key is not None,
        }

    # The request schema is read by hand (body limit, content type, error format), so add it to the docs.
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            defs = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.pop("$defs", {}))
            components["PredictRequest"] = defs
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
