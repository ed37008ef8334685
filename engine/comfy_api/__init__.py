"""ComfyUI's V3 node API (`comfy_api.latest`), implemented for custom nodes written against it.

Custom node packages import it as `comfy_api.latest`; the registry makes that name point here while it
loads them (engine.graph.v3.install_comfy_api), so the engine claims no top-level `comfy_api` package in
site-packages, where it would shadow a real ComfyUI installed beside it.
"""
