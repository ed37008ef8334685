"""Assets: user-owned records over content-addressed blobs (Comfy API v2's `/api/v2/assets`).

A blob is a file named by the blake3 hash of its bytes, stored once however many records point at it;
an asset is one owner's record over a blob (its id, name, content type, tags). The HTTP layer
(engine.api.v2.assets) parses requests; this package stores, deduplicates, deletes and hands assets to
workflows (resolve.py), and knows nothing of HTTP.
"""
