"""Service settings: every knob in one typed place, filled from the command line and ENGINE_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.host_memory import available_memory_bytes
from engine.performance import PerformanceSettings

LOCALHOST = "127.0.0.1"

CACHE_MEMORY_DIVISOR = 16
CACHE_DEFAULT_CAP_BYTES = 4 * 1024**3


def default_cache_bytes() -> int:
    """A sixteenth of the memory this process may use, at most 4 GiB.

    The output cache shares host memory with the process and, on a CPU-only machine, with the model
    weights (the model manager may use half of it), so a fixed 4 GiB took a quarter of a 16 GiB machine
    or container. Its entries are small (a 1024x1024 image is 12 MB, a Flux latent 1 MB, a T5
    conditioning 4 MB), so 4 GiB already holds hundreds of results and more buys little.
    """
    return min(CACHE_DEFAULT_CAP_BYTES, available_memory_bytes() // CACHE_MEMORY_DIVISOR)


@dataclass(frozen=True)
class Settings:
    base_dir: Path = field(default_factory=Path.cwd)
    """Holds models/, input/, output/, temp/ and data/ unless they are set one by one."""
    host: str = LOCALHOST
    open_access: bool = False
    """Serve without API keys (bound to localhost only). Only the operator's flag turns it on, never the
    absence of keys: revoking the last key must not open the API."""
    port: int = 8188
    models_dir: Path | None = None
    extra_model_paths: tuple[Path, ...] = ()
    output_dir: Path | None = None
    data_dir: Path | None = None
    graphs_dir: Path = Path("graphs")
    custom_nodes_dirs: tuple[Path, ...] = (Path("custom_nodes"),)
    public_url: str | None = None
    """Base of the absolute URLs in responses (status_url, image URLs, OpenAPI servers); without it they use
    the address the server listens on, never the client's Host header."""
    tls_cert: Path | None = None
    """PEM certificate (chain) to serve HTTPS with, together with `tls_key`; without both, plain HTTP."""
    tls_key: Path | None = None
    retention_seconds: float = 3600.0
    """How long a finished job and its output files are kept before they are deleted."""
    sync_timeout_seconds: float = 600.0
    cache_bytes: int = field(default_factory=default_cache_bytes)
    """Memory for node outputs kept between runs (engine.graph.cache); 0 keeps none."""
    max_body_bytes: int = 1024 * 1024
    max_asset_bytes: int = 100 * 1024**2
    """The largest asset upload (Comfy API v2 expects single-request uploads of about 100 MB); larger
    ones are refused with 413 as soon as the bytes pass it."""
    max_queue_depth: int = 1000
    """Most jobs waiting to run; Comfy API v2 submissions past it are refused with 429 `queue_full`."""
    queue_full_retry_seconds: int = 30
    """The Retry-After sent with `queue_full`."""
    max_event_streams: int = 16
    """Most Comfy API v2 event streams (`/api/v2/jobs/{id}/events`) one key may hold open at once; each
    holds a connection and a listener, and a client that leaks them would run the server out of both.
    One more is refused with 429 `too_many_streams`."""
    allow_private_webhooks: bool = False
    webhook_delays: tuple[float, ...] = (0.0, 5.0, 30.0, 120.0, 600.0)
    warmup_endpoints: tuple[str, ...] | None = None
    """Endpoints run once at start-up before /ready turns true; None means every available one."""
    test_models: bool | None = None
    """Write and serve tiny random-weight models: None decides by whether models/ holds real weights."""
    max_upload_bytes: int = 50 * 1024**2
    """Largest file ComfyUI's /upload/image and /upload/mask take (ComfyUI's --max-upload-size)."""
    max_upload_pixels: int = 8192 * 8192
    """Most pixels an uploaded image may declare: a small compressed file can claim a huge size (a
    decompression bomb), and a float IMAGE tensor of 8192x8192 already takes 800 MB."""
    max_userdata_bytes: int = 16 * 1024**2
    """Largest file written through /userdata (workflows, which may embed images) or /settings."""
    broker: str | None = None
    """A Redis URL (redis://host:port/db): jobs, keys and the queue live there, shared by every process
    of a fleet. None: the embedded SQLite store in the data folder, for this process alone."""
    performance: PerformanceSettings = field(default_factory=PerformanceSettings)
    """Speed and memory switches for the models: compiling, caches, offloading (engine.performance)."""
    lease_seconds: float = 30.0
    """In a fleet: how long a running job stays its worker's without a heartbeat (one every 2 s) before
    another worker takes it over; a worker claiming jobs is what takes over, so workers use this."""
    device: str | None = None
    """The compute device this process runs graphs on ("cpu", "cuda:1"); None: the first GPU, else the CPU."""
    multi_user: bool = False
    """ComfyUI's --multi-user: each client names its user in the `comfy-user` header and gets its own
    settings and workflows; without it every client is the user "default"."""

    @property
    def data_path(self) -> Path:
        return self.data_dir or self.base_dir / "data"

    @property
    def assets_path(self) -> Path:
        """Where asset blobs live (engine.assets.blobs), named by their blake3 hash."""
        return self.data_path / "assets"

    @property
    def database_path(self) -> Path:
        return self.data_path / "engine.sqlite3"

    @property
    def users_path(self) -> Path:
        """One folder per user (settings, workflows) for ComfyUI's /userdata and /settings."""
        return self.data_path / "users"
