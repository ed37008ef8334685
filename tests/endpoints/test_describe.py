"""What clients read about the endpoints: the request JSON schema, the OpenAPI document and the HTML page,
all generated from the templates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engine import folders
from engine.endpoints import Endpoint, build_openapi, load_endpoints, render_docs_page
from engine.graph.registry import NodeRegistry
from tests.endpoints.conftest import GRAPHS
from tests.endpoints.samples import SOLID, write

SERVER = "http://gpu-box:8000"
SYNC_ERRORS = {"400", "401", "406", "413", "415", "429", "500", "503", "504"}


def resolve(document: dict[str, Any], node: Any) -> Any:
    if isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return target
    return node


def all_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return (
            [node["$ref"]] if "$ref" in node else [ref for value in node.values() for ref in all_refs(value)]
        )
    if isinstance(node, list):
        return [ref for value in node for ref in all_refs(value)]
    return []


def test_the_request_schema_states_types_bounds_defaults_and_required(endpoints: dict[str, Endpoint]) -> None:
    schema = endpoints["flux-pro"].json_schema()
    assert schema["type"] == "object" and schema["required"] == ["prompt"]
    assert schema["properties"]["steps"] == {
        "type": "integer",
        "description": "Number of sampling steps.",
        "minimum": 1,
        "maximum": 50,
        "default": 25,
        "x-affects-price": True,
    }
    assert schema["properties"]["aspect_ratio"]["enum"][0] == "21:9"
    seed = schema["properties"]["seed"]
    assert "default" not in seed and seed["x-random-when-absent"] and seed["maximum"] == 2**64 - 1
    assert schema["properties"]["interval"]["x-accepted-only"]
    assert schema["properties"]["prompt"]["minLength"] == 1
    assert schema["properties"]["prompt"]["maxLength"] == endpoints["flux-pro"].fields["prompt"].max_length
    assert schema["additionalProperties"] is True


def test_openapi_has_the_segmind_and_fal_routes(endpoints: dict[str, Endpoint]) -> None:
    document = json.loads(json.dumps(build_openapi(endpoints, SERVER)))
    assert document["openapi"] == "3.1.0" and document["servers"] == [{"url": SERVER}]
    paths = document["paths"]
    for endpoint_id in ("aura-flow", "flux-pro", "flux-schnell", "flux-dev", "solid-color"):
        assert set(paths[f"/v1/{endpoint_id}"]) == {"post"} and set(paths[f"/v2/{endpoint_id}"]) == {"post"}
    assert (
        set(paths["/v2/requests/{request_id}/status"]) == set(paths["/v2/requests/{request_id}"]) == {"get"}
    )
    fal = "/fal-ai/aura-flow"
    assert set(paths[fal]) == {"post"}
    assert set(paths[f"{fal}/requests/{{request_id}}/status"]) == {"get"}
    assert set(paths[f"{fal}/requests/{{request_id}}"]) == {"get"}
    assert set(paths[f"{fal}/requests/{{request_id}}/cancel"]) == {"put"}
    assert "/v1/fal-ai/aura-flow" not in paths and "/aura-flow" not in paths
    schemes = document["components"]["securitySchemes"]
    assert schemes["segmindKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["falKey"]["name"] == "Authorization"
    either_key = [{"segmindKey": []}, {"falKey": []}]
    assert paths["/v1/aura-flow"]["post"]["security"] == paths[fal]["post"]["security"] == either_key
    assert set(paths[f"{fal}/requests/{{request_id}}/status/stream"]) == {"get"}
    assert set(paths["/v2/requests/{request_id}/events"]) == {"get"}
    assert set(paths["/v2/requests/{request_id}/cancel"]) == {"post"}
    assert paths["/files/{request_id}/{index}"]["get"]["security"] == []
    for service_path in ("/health", "/ready", "/metrics", "/v1/endpoints", "/openapi.json", "/docs"):
        assert paths[service_path]["get"]["security"] == []
    invalid = paths[fal]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert resolve(document, invalid)["required"] == ["detail"]
    for ref in all_refs(document):
        assert resolve(document, {"$ref": ref}) is not None
    operation_ids = [op["operationId"] for path in paths.values() for op in path.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_the_sync_route_answers_image_bytes_or_json_errors(endpoints: dict[str, Endpoint]) -> None:
    document = build_openapi(endpoints, SERVER)
    operation = document["paths"]["/v1/aura-flow"]["post"]
    responses = operation["responses"]
    assert set(responses) == {"200"} | SYNC_ERRORS
    several = "application/json"  # several images come base64-encoded in JSON
    assert list(responses["200"]["content"]) == ["image/webp", "image/jpeg", "image/png", several]
    assert responses["429"]["headers"]["Retry-After"] and responses["503"]["headers"]["Retry-After"]
    assert "x-remaining-credits" in responses["200"]["headers"]
    error = resolve(document, responses["400"]["content"]["application/json"]["schema"])
    assert error["required"] == ["error"] and {"error", "errors", "field"} <= set(error["properties"])
    assert set(operation["requestBody"]["content"]) == {
        "application/json",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    }
    body = resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
    expected = endpoints["aura-flow"].json_schema()
    del expected["$schema"]
    assert body == expected
    schnell = document["paths"]["/v1/flux-schnell"]["post"]["responses"]["200"]["content"]
    assert list(schnell) == ["image/jpeg", "application/json"]
    submitted = document["paths"]["/v2/aura-flow"]["post"]["responses"]["200"]["content"]["application/json"]
    queued = resolve(document, submitted["schema"])
    assert {"request_id", "status_url", "response_url"} <= set(queued["required"])


def test_the_fal_result_schema_has_images_and_the_echoed_fields(endpoints: dict[str, Endpoint]) -> None:
    document = build_openapi(endpoints, SERVER)
    result = document["paths"]["/fal-ai/aura-flow/requests/{request_id}"]["get"]["responses"]["200"]
    output = resolve(document, result["content"]["application/json"]["schema"])
    assert output["required"] == ["images", "seed", "prompt"]
    image = resolve(document, output["properties"]["images"]["items"])
    assert set(image["properties"]) == {"url", "content_type", "file_name", "file_size", "width", "height"}
    assert output["properties"]["seed"]["type"] == "integer"


def test_an_unavailable_endpoint_is_described_as_such(
    registry: NodeRegistry, workdir: folders.FolderSettings
) -> None:
    endpoints = load_endpoints(GRAPHS, registry)
    operation = build_openapi(endpoints, SERVER)["paths"]["/v1/aura-flow"]["post"]
    assert "aura_flow_0.3.safetensors" in operation["x-unavailable"]
    assert "Not available on this server" in operation["description"]
    assert "Not available on this server" in render_docs_page(endpoints, server_url=SERVER)


def test_the_docs_page_lists_every_endpoint_with_fields_and_a_curl_example(
    endpoints: dict[str, Endpoint],
) -> None:
    page = render_docs_page(endpoints, server_url=SERVER)
    for endpoint in endpoints.values():
        assert f'id="{endpoint.id}"' in page
        for name in endpoint.fields:
            assert f"<code>{name}</code>" in page
    assert f"curl -X POST &#x27;{SERVER}/v1/flux-schnell&#x27;" in page
    assert "--output image.jpg" in page and "--output image.webp" in page
    assert "Authorization: Key $API_KEY" in page
    assert "changes nothing in the image" in page
    assert "1 to 100" in page and "uni_pc" in page


def test_the_docs_page_escapes_what_templates_say(tmp_path: Path, registry: NodeRegistry) -> None:
    template = json.loads(json.dumps(SOLID))
    template["title"] = "<img src=x onerror=alert(1)>"
    template["description"] = "<script>alert('hi')</script>"
    template["fields"]["width"]["description"] = "width & </td> height"
    template["fields"]["width"]["example"] = 128
    write(tmp_path, "solid", template)
    page = render_docs_page(load_endpoints(tmp_path, registry), server_url=SERVER)
    assert "<script>" not in page and "<img" not in page and "</td> height" not in page
    assert "&lt;script&gt;alert(&#x27;hi&#x27;)&lt;/script&gt;" in page
    assert "width &amp; &lt;/td&gt; height" in page
    assert re.search(r"-d &#x27;\{&quot;width&quot;: 128\}&#x27;", page)
