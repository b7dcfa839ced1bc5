"""The FastAPI app: the OpenAI-compatible routes, the key check, and the chat page at `/`.

    app = create_app(backend, personas, ServeConfig(api_key="..."))

Routes (all errors in OpenAI's shape, so the server answers a bad request and keeps serving):

    GET  /v1/models              one model per persona: mbti-enfp … with nickname and summary in metadata
    GET  /v1/models/{id}         one of them, or 404
    POST /v1/chat/completions    OpenAI's request; `"stream": true` answers server-sent events
    GET  /health                 backend, queue; no key needed (load balancers probe it)
    GET  /                       the chat page (serve/static/), no key needed to load it

The backend is the in-process model (serve/local.py) or an upstream server (serve/upstream.py); both
expose `complete`, `open_stream`, `health` and `aclose`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve import protocol as P
from serve.config import ServeConfig
from serve.protocol import APIError, ChatCompletionRequest
from train.personas import PersonaPrompt

STATIC_DIR = Path(__file__).resolve().parent / "static"


class DropQuery(logging.Filter):
    """Access-log lines without the query string: a client may put its key there (`?api_key=sk-...`), and
    uvicorn's access log prints the whole path. Keeps the line, drops everything after `?`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


def hide_queries_in_access_log() -> None:
    """Install `DropQuery` on uvicorn's access logger (once; called when the app starts)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, DropQuery) for f in logger.filters):
        logger.addFilter(DropQuery())


class Backend(Protocol):
    kind: str
    description: str

    async def complete(self, req: P.ChatRequest) -> dict[str, Any]: ...
    async def open_stream(self, req: P.ChatRequest) -> AsyncIterator[str]: ...
    def health(self) -> dict[str, Any]: ...
    async def aclose(self) -> None: ...


def create_app(backend: Backend, personas: dict[str, PersonaPrompt], cfg: ServeConfig = ServeConfig()) -> FastAPI:
    created = P.now()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        hide_queries_in_access_log()  # after uvicorn has set up its loggers
        yield
        await backend.aclose()

    app = FastAPI(title="MBTI persona chat", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend
    app.state.personas = personas

    async def require_key(request: Request) -> None:
        """With --api-key, every /v1 request carries `Authorization: Bearer <key>` (compared in constant time)."""
        if cfg.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), cfg.api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send the header `Authorization: Bearer <key>` with "
                                "the key the server was started with (--api-key)", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, e: RequestValidationError) -> JSONResponse:
        message, param = P.validation_message(list(e.errors()))
        return JSONResponse(P.error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(P.error_body(str(e.detail)), status_code=e.status_code, headers=e.headers)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **backend.health()}

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def list_models() -> dict[str, Any]:
        return P.model_list(personas, created)

    @app.get("/v1/models/{model_id}", dependencies=[Depends(require_key)])
    async def get_model(model_id: str) -> dict[str, Any]:
        return P.model_entry(P.find_persona(personas, model_id), created)

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)], response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
        raw = await request.json()  # what the client sent, unknown fields included, for an upstream
        req = P.parse_request(body, raw, personas)
        if req.stream:
            events = await backend.open_stream(req)
            # no-cache / no buffering: proxies (nginx) must pass each chunk on as it comes
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(await _unless_disconnected(request, backend.complete(req)))

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
                   dependencies=[Depends(require_key)])
    async def unknown(path: str, request: Request) -> None:
        raise APIError(404, f"no route {request.method} /v1/{path}: this server has /v1/models and "
                            "/v1/chat/completions", code="not_found")

    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="page")
    return app


async def _unless_disconnected(request: Request, work) -> Any:
    """Await `work`, but cancel it (and so stop the model) when the client hangs up first."""
    task = asyncio.ensure_future(work)

    async def hung_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise APIError(499, "client closed the request", code="client_closed")  # nobody reads it
    return task.result()
