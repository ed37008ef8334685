"""ComfyUI's jobs API (served only under /api, as ComfyUI serves it): GET /api/jobs lists the caller's
prompts of every state with filters and paging, GET /api/jobs/{id} shows one, POST /api/jobs/{id}/cancel
and POST /api/jobs/cancel cancel them whatever their state.

The shapes follow ComfyUI's comfy_execution/jobs.py: a job is `{id, status (pending | in_progress |
completed | failed | cancelled), priority, create_time, outputs_count, ...}`, a listing
`{"jobs": [...], "pagination": {offset, limit, total, has_more}}`.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.comfy.records import JOB_STATUS, job_object, own_prompt, visible
from engine.api.comfy.requests import MAX_IDS, is_canonical_uuid, json_object, query_int
from engine.api.context import service
from engine.api.errors import ApiError, json_response
from engine.jobs.store import JobOrder

MAX_PAGE = 1000
"""The most jobs one page holds."""
STATUSES = {name: status for status, name in JOB_STATUS.items()}
SORTS: dict[str, JobOrder] = {"created_at": "created", "execution_duration": "duration"}


async def list_jobs(request: web.Request) -> web.Response:
    query = request.query
    statuses = None
    if query.get("status"):
        names = [name.strip().lower() for name in query["status"].split(",") if name.strip()]
        invalid = [name for name in names if name not in STATUSES]
        if invalid:
            raise ApiError(
                400,
                f"Invalid status value(s): {', '.join(invalid)[:200]}. Valid values: {', '.join(STATUSES)}",
                field="status",
            )
        statuses = frozenset(STATUSES[name] for name in names)
    sort_by = query.get("sort_by", "created_at").lower()
    if sort_by not in SORTS:
        raise ApiError(400, "sort_by must be 'created_at' or 'execution_duration'", field="sort_by")
    sort_order = query.get("sort_order", "desc").lower()
    if sort_order not in ("asc", "desc"):
        raise ApiError(400, "sort_order must be 'asc' or 'desc'", field="sort_order")
    limit = query_int(request, "limit", minimum=1, maximum=MAX_PAGE)
    offset = max(query_int(request, "offset", minimum=-(2**31)) or 0, 0)  # ComfyUI: negative is 0
    jobs, total = await service(request).list_jobs(
        visible(
            request,
            statuses=statuses,
            workflow_id=query.get("workflow_id") or None,
            order=SORTS[sort_by],
            descending=sort_order == "desc",
            offset=offset,
            limit=limit,
        )
    )
    return json_response(
        {
            "jobs": [job_object(job, detail=False) for job in jobs],
            "pagination": {
                "offset": offset,
                "limit": limit,
                "total": total,
                "has_more": offset + len(jobs) < total,
            },
        }
    )


async def get_job(request: web.Request) -> web.Response:
    job = await own_prompt(request, request.match_info["job_id"])
    if job is None:
        raise ApiError(404, "Job not found")
    return json_response(job_object(job, detail=True))


async def _cancel(request: web.Request, job_id: str) -> bool:
    """Cancel a pending or running job of the caller's; False for a finished, unknown or other's one."""
    job = await own_prompt(request, job_id)
    if job is None or job.status.terminal:
        return False
    cancelled = await service(request).cancel(job.id)
    return cancelled is not None and (cancelled.cancel_requested or cancelled.status.terminal)


async def cancel_job(request: web.Request) -> web.Response:
    """Idempotent, as in ComfyUI: a finished or unknown job answers 200 `{"cancelled": false}`."""
    return json_response({"cancelled": await _cancel(request, request.match_info["job_id"])})


async def cancel_jobs(request: web.Request) -> web.Response:
    """`{"job_ids": [...]}`: cancel each that is pending or running; ids that are not UUIDs are refused
    up front, as ComfyUI refuses them."""
    body = await json_object(request)
    job_ids = body.get("job_ids")
    if not isinstance(job_ids, list):
        raise ApiError(400, "job_ids must be a list", field="job_ids")
    if len(job_ids) > MAX_IDS:
        raise ApiError(400, f"job_ids may list at most {MAX_IDS} ids", field="job_ids")
    invalid = [
        (job_id if isinstance(job_id, str) else repr(job_id))[:100]
        for job_id in job_ids
        if not is_canonical_uuid(job_id)
    ]
    if invalid:
        raise ApiError(400, "job_ids contains invalid id(s)", field="job_ids", invalid_ids=invalid)
    cancelled = False
    for job_id in dict.fromkeys(job_ids):
        cancelled = await _cancel(request, job_id) or cancelled
    return json_response({"cancelled": cancelled})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/jobs", list_jobs)
    app.router.add_post("/api/jobs/cancel", cancel_jobs)
    app.router.add_get("/api/jobs/{job_id}", get_job)
    app.router.add_post("/api/jobs/{job_id}/cancel", cancel_job)
