"""Over HTTP, a prompt longer than its model reads is refused before it is queued: Segmind answers 400
naming the field, the token count and the bound; fal answers 422 in FastAPI's shape; the OpenAPI
document says the bound."""

from __future__ import annotations

from transformers import T5Tokenizer

from engine import folders
from tests.api.conftest import LiveServer

LONG_PROMPT = "a photo of a cat sitting on a red chair " * 30


def t5_count(text: str) -> int:
    """The prompt's length in the served T5 tokenizer's own tokens, EOS included."""
    folder = folders.get_folder_paths("text_encoders")[0] / "tokenizers" / "t5xxl"
    return len(T5Tokenizer.from_pretrained(folder)(text)["input_ids"])


def test_segmind_refuses_a_prompt_over_its_token_bound_with_400(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/v2/flux-schnell", json={"prompt": LONG_PROMPT})
        openapi = client.get("/openapi.json").json()

    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert (error["field"], error["code"], error["max_tokens"]) == ("prompt", "max_tokens", 256)
    assert error["received_tokens"] == t5_count(LONG_PROMPT) > 256
    assert "prompt must be at most 256 T5-XXL tokens" in response.json()["error"]
    prompt_schema = openapi["components"]["schemas"]["flux-schnell.Input"]["properties"]["prompt"]
    assert (prompt_schema["x-max-tokens"], prompt_schema["x-tokenizer"]) == (256, "t5xxl")


def test_fal_refuses_a_prompt_over_its_token_bound_with_fastapi_422(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/fal-ai/aura-flow", json={"prompt": LONG_PROMPT})

    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "prompt"] and detail["type"] == "value_error"
    assert detail["ctx"]["max_tokens"] == 256 and detail["ctx"]["tokenizer"] == "pile_t5xl"
    assert detail["ctx"]["received_tokens"] > 256
