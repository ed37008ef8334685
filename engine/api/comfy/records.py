"""What ComfyUI's server API shows of a job: its queue item, its history entry, its job object.

Jobs queued through /prompt are stored like any other (api "comfy"), and only those appear in
ComfyUI's queue, history and jobs listings; a key sees only its own, as everywhere else. A prompt
deleted from the queue before it ran is forgotten, as ComfyUI forgets it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.context import api_key, service
from engine.jobs.store import JobQuery
from engine.jobs.types import Job, JobStatus
from engine.service import Service

COMFY_API = "comfy"
COMFY_ENDPOINT = "comfyui"
"""The `endpoint` of jobs queued through /prompt: a graph of the client's own, not a published endpoint."""

RUNNING = frozenset({JobStatus.PROCESSING})
PENDING = frozenset({JobStatus.QUEUED})
UNFINISHED = RUNNING | PENDING
FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

JOB_STATUS = {
    JobStatus.QUEUED: "pending",
    JobStatus.PROCESSING: "in_progress",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
"""The jobs API's status names (ComfyUI's comfy_execution/jobs.py)."""

PREVIEWABLE_MEDIA = frozenset({"images", "video", "audio", "3d", "text"})
TEXT_FILE_SUFFIXES = (".txt", ".md", ".json")
TEXT_PREVIEW_LIMIT = 1024
"""A text output shown as a job's preview is cut to this many characters, as ComfyUI does."""


def visible(request: web.Request, **query: Any) -> JobQuery:
    """A query over the ComfyUI jobs the caller may see: its key's own (every one with open access)."""
    key = api_key(request)
    return JobQuery(api=COMFY_API, owner=key.id if key is not None else None, dequeued=False, **query)


async def own_prompt(request: web.Request, prompt_id: str) -> Job | None:
    """The ComfyUI job with this id if the caller may see it; another key's is as absent as a missing one."""
    jobs, _ = await service(request).list_jobs(visible(request, ids=frozenset({prompt_id})))
    return jobs[0] if jobs else None


async def queue_remaining(engine: Service) -> int:
    """ComfyUI's `queue_remaining`: prompts queued or running, whoever sent them."""
    _, total = await engine.list_jobs(JobQuery(api=COMFY_API, statuses=UNFINISHED, limit=0))
    return total


def queue_info(remaining: int) -> dict[str, Any]:
    return {"exec_info": {"queue_remaining": remaining}}


def number(job: Job) -> int | float:
    """The job's place in the queue as ComfyUI writes it: an integer unless a fraction was asked for."""
    return int(job.number) if job.number.is_integer() else job.number


def queue_item(job: Job) -> list[Any]:
    """[number, prompt_id, prompt, extra_data, outputs_to_execute], as /queue and /history show a prompt."""
    return [number(job), job.id, job.prompt, job.extra_data, list(job.targets or [])]


def history_entry(job: Job) -> dict[str, Any]:
    """A finished prompt as /history shows it."""
    report = job.report
    outputs = report.outputs if report is not None else {}
    display = report.display_nodes if report is not None else {}
    meta = {}
    for node_id in outputs:
        shown = display.get(node_id, node_id)
        meta[node_id] = {
            "node_id": node_id,
            "display_node": shown,
            "parent_node": shown if shown != node_id else None,
            "real_node_id": node_id,
        }
    return {
        "prompt": queue_item(job),
        "outputs": outputs,
        "status": status_info(job),
        "meta": meta,
    }


def status_info(job: Job) -> dict[str, Any]:
    return {
        "status_str": "success" if job.status == JobStatus.COMPLETED else "error",
        "completed": job.status == JobStatus.COMPLETED,
        "messages": [list(message) for message in (job.report.messages if job.report else [])],
    }


def job_object(job: Job, *, detail: bool) -> dict[str, Any]:
    """A job as ComfyUI's jobs API shows it (absent fields are left out, as ComfyUI prunes them);
    `detail` adds the graph and, once finished, the outputs and status messages (GET /api/jobs/{id})."""
    body: dict[str, Any] = {
        "id": job.id,
        "status": JOB_STATUS[job.status],
        "priority": number(job),
        "create_time": _create_time(job),
    }
    if job.status in FINISHED:
        start, end, error = _execution_times(job)
        outputs = job.report.outputs if job.report is not None else {}
        count, preview = outputs_summary(outputs)
        body |= {
            "execution_start_time": start,
            "execution_end_time": end,
            "execution_error": error,
            "outputs_count": count,
            "previewable_outputs_count": _previewable_count(outputs),
            "preview_output": preview,
        }
    else:
        body |= {"outputs_count": 0, "previewable_outputs_count": 0}
    body["workflow_id"] = _workflow_id(job)
    body = {key: value for key, value in body.items() if value is not None}
    if detail:
        if job.status in FINISHED:
            body["outputs"] = job.report.outputs if job.report is not None else {}
            body["execution_status"] = status_info(job)
        body["workflow"] = {"prompt": job.prompt, "extra_data": job.extra_data}
    return body


def _create_time(job: Job) -> int:
    created = job.extra_data.get("create_time")
    return created if isinstance(created, int) else int(job.created_at * 1000)


def _workflow_id(job: Job) -> str | None:
    info = job.extra_data.get("extra_pnginfo")
    workflow = info.get("workflow") if isinstance(info, dict) else None
    workflow_id = workflow.get("id") if isinstance(workflow, dict) else None
    return workflow_id if isinstance(workflow_id, str) else None


def _execution_times(job: Job) -> tuple[int | None, int | None, dict[str, Any] | None]:
    """(start ms, end ms, the execution_error message) from the status messages, as ComfyUI reads them;
    the job's own times where a message is missing (a run stopped before it reported)."""
    start = int(job.started_at * 1000) if job.started_at is not None else None
    end = int(job.finished_at * 1000) if job.finished_at is not None else None
    error = None
    for kind, data in job.report.messages if job.report is not None else []:
        if kind == "execution_start":
            start = data.get("timestamp", start)
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp", end)
            if kind == "execution_error":
                error = data
    return start, end, error


def _items(outputs: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(node id, media type, item) for every listed output item ('animated' is a flag, not a list)."""
    return [
        (node_id, media, item)
        for node_id, node_outputs in outputs.items()
        if isinstance(node_outputs, dict)
        for media, items in node_outputs.items()
        if media != "animated" and isinstance(items, list)
        for item in items
    ]


def _previewable(media: str, item: dict[str, Any]) -> bool:
    kind = str(item.get("format", ""))
    filename = str(item.get("filename", "")).lower()
    return (
        media in PREVIEWABLE_MEDIA
        or kind.startswith(("video/", "audio/"))
        or filename.endswith((".obj", ".fbx", ".gltf", ".glb", ".usdz", *TEXT_FILE_SUFFIXES))
    )


def _previewable_count(outputs: dict[str, Any]) -> int:
    return sum(
        1 for _, media, item in _items(outputs) if isinstance(item, dict) and _previewable(media, item)
    )


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """(how many files the job output, the one to show for it). The preview is a saved visual output if
    there is one, else another previewable visual (a temp preview), else a saved text file, else the
    first text an output node showed; text shown by a node is not counted as a file."""
    count = 0
    saved: dict[str, Any] | None = None
    other = text_file = text = saved
    for node_id, media, item in _items(outputs):
        if not isinstance(item, dict):
            if media == "text" and text is None:
                value = str(item[0] if isinstance(item, list) and item else item)
                text = {"content": value[:TEXT_PREVIEW_LIMIT], "nodeId": node_id, "mediaType": media}
                if len(value) > TEXT_PREVIEW_LIMIT:
                    text |= {"truncated": True}
            continue
        count += 1
        if not _previewable(media, item):
            continue
        shown = {**item, "nodeId": node_id, "mediaType": item.get("mediaType", media)}
        filename = str(item.get("filename", "")).lower()
        if media == "text" or filename.endswith(TEXT_FILE_SUFFIXES):
            text_file = text_file or shown
        elif item.get("type") == "output":
            saved = saved or shown
        else:
            other = other or shown
    return count, saved or other or text_file or text
