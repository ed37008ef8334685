"""ComfyUI's queue: GET /queue (running and pending prompts), POST /queue (delete or clear pending ones),
POST /interrupt (stop the running prompt) and POST /free (unload models, drop cached outputs).

They act on the caller's own prompts only: a key cannot see, delete or interrupt another key's.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.comfy import add_route
from engine.api.comfy.records import PENDING, RUNNING, own_prompt, queue_item, visible
from engine.api.comfy.requests import flag, id_list, json_object
from engine.api.context import service
from engine.api.errors import ApiError, json_response


async def get_queue(request: web.Request) -> web.Response:
    engine = service(request)
    running, _ = await engine.list_jobs(visible(request, statuses=RUNNING, order="queue"))
    pending, _ = await engine.list_jobs(visible(request, statuses=PENDING, order="queue"))
    return json_response(
        {
            "queue_running": [queue_item(job) for job in running],
            "queue_pending": [queue_item(job) for job in pending],
        }
    )


async def post_queue(request: web.Request) -> web.Response:
    """`{"clear": true}` empties the caller's pending prompts, `{"delete": [ids]}` removes those; a
    running prompt is never stopped here (that is /interrupt), and unknown ids are ignored, as in ComfyUI."""
    body = await json_object(request)
    clear = flag(body, "clear")
    delete = id_list(body, "delete")
    engine = service(request)
    if clear:
        pending, _ = await engine.list_jobs(visible(request, statuses=PENDING))
        delete = [*delete, *(job.id for job in pending)]
    for prompt_id in dict.fromkeys(delete):
        job = await own_prompt(request, prompt_id)
        if job is not None:
            await engine.dequeue(job.id)
    return web.Response(status=200)


async def post_interrupt(request: web.Request) -> web.Response:
    """Stop the running prompt: the one named by `{"prompt_id"}` only if it is running, else whichever
    of the caller's is running (where several run at once, in a fleet or on a worker that overlaps
    jobs, the oldest of them). The prompt ends as cancelled (execution_interrupted), on whichever
    worker runs it."""
    body = await json_object(request, required=False)
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise ApiError(400, "'prompt_id' must be a string", field="prompt_id")
    engine = service(request)
    for running in await engine.running_jobs():
        if prompt_id and running.id != prompt_id:
            continue
        if await own_prompt(request, running.id) is not None:
            await engine.cancel(running.id)
            break
    return web.Response(status=200)


async def post_free(request: web.Request) -> web.Response:
    body = await json_object(request)
    await service(request).free(
        unload_models=flag(body, "unload_models"), free_memory=flag(body, "free_memory")
    )
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/queue", get_queue)
    add_route(app, "POST", "/queue", post_queue)
    add_route(app, "POST", "/interrupt", post_interrupt)
    add_route(app, "POST", "/free", post_free)
