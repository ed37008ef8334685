"""A ComfyUI-graph execution engine that serves text-to-image models behind a hosted-style HTTP API."""
