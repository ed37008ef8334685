"""The HTTP service (aiohttp): Segmind-style sync/async APIs, a fal-style queue, and service routes."""
