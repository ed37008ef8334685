"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from aiohttp import web

from engine.api.sessions import Sessions
from engine.jobs.types import ApiKey
from engine.service import Service

SERVICE = web.AppKey("service", Service)
SESSIONS = web.AppKey("sessions", Sessions)
BASE_URL = web.AppKey("base_url", str)
"""Base of the absolute URLs in responses, fixed at start-up (see engine.api.listen)."""
API_KEY = web.RequestKey[ApiKey | None]("api_key")
"""The authenticated key, or None when the server runs with --open-access (and on public routes)."""


def api_key(request: web.Request) -> ApiKey | None:
    return request.get(API_KEY)


def service(request: web.Request) -> Service:
    return request.app[SERVICE]


def base_url(request: web.Request) -> str:
    return request.app[BASE_URL]
