"""ComfyUI's history: GET /history (finished prompts, oldest first), GET /history/{prompt_id}, and
POST /history to delete entries or clear it.

The history is the store's finished ComfyUI jobs, so it survives a restart and expires with the
retention period like every job. An entry is `{"prompt": [number, id, prompt, extra_data, outputs],
"outputs": {node: ui}, "status": {status_str, completed, messages}, "meta": {node: {...}}}`.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.comfy import add_route
from engine.api.comfy.records import FINISHED, history_entry, own_prompt, visible
from engine.api.comfy.requests import MAX_QUERY_INT, flag, id_list, json_object, query_int
from engine.api.context import service
from engine.api.errors import json_response

MAX_HISTORY_ITEMS = 10_000
"""The most entries one answer holds (ComfyUI keeps no more than this many)."""


async def get_history(request: web.Request) -> web.Response:
    """ComfyUI's paging: `max_items` alone gives the latest that many; with `offset`, that many from
    the offset-th oldest on. Either way entries come oldest first."""
    max_items = query_int(request, "max_items", minimum=1, maximum=MAX_HISTORY_ITEMS)
    offset = query_int(request, "offset", minimum=-MAX_QUERY_INT)
    limit = max_items if max_items is not None else MAX_HISTORY_ITEMS
    engine = service(request)
    if offset is None or offset < 0:
        query = visible(request, statuses=FINISHED, order="finished", descending=True, limit=limit)
        jobs = list(reversed((await engine.list_jobs(query))[0]))
    else:
        query = visible(request, statuses=FINISHED, order="finished", offset=offset, limit=limit)
        jobs = (await engine.list_jobs(query))[0]
    return json_response({job.id: history_entry(job) for job in jobs})


async def get_history_entry(request: web.Request) -> web.Response:
    """One finished prompt as `{id: entry}`; `{}` for one that is unknown, unfinished or another key's."""
    job = await own_prompt(request, request.match_info["prompt_id"])
    if job is None or job.status not in FINISHED:
        return json_response({})
    return json_response({job.id: history_entry(job)})


async def post_history(request: web.Request) -> web.Response:
    body = await json_object(request)
    clear = flag(body, "clear")
    delete = id_list(body, "delete")
    engine = service(request)
    if clear:
        await engine.forget(visible(request))
    elif delete:
        await engine.forget(visible(request, ids=frozenset(delete)))
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/history", get_history)
    add_route(app, "GET", "/history/{prompt_id}", get_history_entry)
    add_route(app, "POST", "/history", post_history)
