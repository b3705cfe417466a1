"""The FastAPI app that ``python -m benchmarks.server`` runs under uvicorn.

Configured by its environment: ``METALEARN_DB_URL`` (the store) and
``METALEARN_BENCH_MODE``: ``record`` (the baseline: record only, ``await
asyncio.to_thread(store.record_plan, plan)``, no analysis), or the ``ExecutionService``
worker mode, ``process``, ``thread`` or ``none``. ``POST /plans`` takes a plan as JSON and
answers with its ``seq``; ``GET /health`` answers at once (the event loop's latency).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel

from metalearn import ExecutionService, HistoryStore, Plan

MODE = os.environ.get("METALEARN_BENCH_MODE", "process")
WORKER_MODES = {"process": "process", "thread": "thread", "none": None}


class StepIn(BaseModel):
    tool: str
    status: str = "ok"
    duration_ms: float | None = None


class PlanIn(BaseModel):
    plan_id: str
    agent_id: str
    status: str
    started_at: str
    finished_at: str
    goal_type: str | None = None
    steps: list[StepIn]


Finalize = Callable[[Plan], Awaitable[int]]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ["METALEARN_DB_URL"]
    if MODE == "record":
        with HistoryStore(url) as store:

            async def record(plan: Plan) -> int:
                return await asyncio.to_thread(store.record_plan, plan)

            app.state.finalize = record
            yield
        return
    nice = int(os.environ.get("METALEARN_BENCH_NICE", "10"))
    concurrency = os.environ.get("METALEARN_BENCH_CONCURRENCY")
    async with ExecutionService(
        url, worker=WORKER_MODES[MODE], nice=nice,  # type: ignore[arg-type]
        max_concurrency=None if concurrency is None else int(concurrency),
    ) as service:  # fmt: skip

        async def finalize(plan: Plan) -> int:
            return (await service.finalize_plan(plan)).seq

        app.state.finalize = finalize
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/plans")
async def post_plan(body: PlanIn) -> dict[str, object]:
    plan = Plan(
        body.plan_id, body.agent_id, body.status, body.started_at, body.finished_at,
        goal_type=body.goal_type, steps=[step.model_dump() for step in body.steps],
    )  # fmt: skip
    finalize: Finalize = app.state.finalize
    return {"plan_id": plan.plan_id, "seq": await finalize(plan)}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}
