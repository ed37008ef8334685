"""Prompts are bounded in the tokens their encoder reads (BFL's and diffusers' max_sequence_length:
256 for Flux schnell and AuraFlow, 512 for Flux dev), counted at submit with the model's tokenizer,
and a template can price a prompt by its length."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import sentencepiece
from transformers import CLIPTokenizer, T5Tokenizer

from engine.endpoints import Endpoint, EndpointError, RequestError, load_endpoints
from engine.endpoints.tokens import Tokenizers
from engine.graph.registry import NodeRegistry
from tests.endpoints.samples import SOLID, Template, write

CAPS = {
    "flux-schnell": {"prompt": ("t5xxl", 256)},
    "flux-dev": {"prompt": ("t5xxl", 512)},
    "flux-pro": {"prompt": ("t5xxl", 512)},
    "aura-flow": {"prompt": ("pile_t5xl", 256), "negative_prompt": ("pile_t5xl", 256)},
    "fal-ai/aura-flow": {"prompt": ("pile_t5xl", 256)},
    "solid-color": {},
}
"""Per shipped endpoint, its prompt fields' tokenizer and bound (BFL's flux cli: 256 if schnell else 512;
diffusers' AuraFlowPipeline: max_sequence_length 256)."""

WORDS = "a photo of a cat sitting on a red chair "


def real_count(tokenizers: Path, family: str, text: str) -> int:
    """What the family's own tokenizer library gives for the text, special tokens included: the length
    pipelines compare with max_sequence_length."""
    folder = tokenizers / family
    if family == "clip_l":
        return len(CLIPTokenizer.from_pretrained(folder)(text)["input_ids"])
    if family == "t5xxl":
        return len(T5Tokenizer.from_pretrained(folder)(text)["input_ids"])
    processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    return len(processor.encode(text)) + 1  # Pile-T5: no BOS, EOS after (AuraFlow's tokenizer config)


def longest_accepted(tokenizers: Path, family: str, bound: int) -> str:
    """The most repeats of WORDS whose real token count is within the bound."""
    repeats = 1
    while real_count(tokenizers, family, WORDS * (repeats + 1)) <= bound:
        repeats += 1
    return WORDS * repeats


@pytest.fixture
def tokenizers(models: Path) -> Path:
    return models / "text_encoders" / "tokenizers"


@pytest.mark.parametrize("family", ["clip_l", "t5xxl", "pile_t5xl"])
def test_a_prompt_counts_the_tokens_its_tokenizer_gives(tokenizers: Path, family: str) -> None:
    counter = Tokenizers([tokenizers.parent])
    for text in ("", "a red cat", WORDS * 40, "Close-up portrait of a majestic iguana, 3D render!"):
        assert counter.count(family, text) == real_count(tokenizers, family, text)  # type: ignore[arg-type]


def test_emphasis_syntax_is_not_counted_as_tokens(tokenizers: Path) -> None:
    counter = Tokenizers([tokenizers.parent])
    plain = real_count(tokenizers, "t5xxl", "red") + real_count(tokenizers, "t5xxl", "cat") - 1
    assert counter.count("t5xxl", "(red:1.5)cat") == plain


def test_shipped_prompts_are_bounded_in_their_encoders_tokens(endpoints: dict[str, Endpoint]) -> None:
    for endpoint_id, caps in CAPS.items():
        fields = endpoints[endpoint_id].fields
        bounded = {
            name: (field.max_tokens.tokenizer, field.max_tokens.maximum)
            for name, field in fields.items()
            if field.max_tokens is not None
        }
        assert bounded == caps, endpoint_id


@pytest.mark.parametrize(("endpoint_id", "field"), [(e, f) for e, caps in CAPS.items() for f in caps])
def test_a_prompt_over_the_bound_is_refused_naming_field_count_and_bound(
    endpoints: dict[str, Endpoint], tokenizers: Path, endpoint_id: str, field: str
) -> None:
    endpoint = endpoints[endpoint_id]
    family, bound = CAPS[endpoint_id][field]
    fits = longest_accepted(tokenizers, family, bound)
    too_long = fits + WORDS
    required = {"prompt": "a cat"}

    assert endpoint.parse({**required, field: fits}, strings=False)[field] == fits
    with pytest.raises(RequestError) as raised:
        endpoint.parse({**required, field: too_long}, strings=True)

    (error,) = raised.value.errors
    count = real_count(tokenizers, family, too_long)
    assert error == {
        "field": field,
        "code": "max_tokens",
        "message": error["message"],
        "max_tokens": bound,
        "received_tokens": count,
        "tokenizer": family,
    }
    assert error["message"].startswith(f"{field} must be at most {bound} ")
    assert f"(it is {count})" in error["message"]


def test_the_fal_error_carries_the_bound_in_fastapis_shape(
    endpoints: dict[str, Endpoint], tokenizers: Path
) -> None:
    too_long = longest_accepted(tokenizers, "pile_t5xl", 256) + WORDS
    with pytest.raises(RequestError) as raised:
        endpoints["fal-ai/aura-flow"].parse({"prompt": too_long}, strings=False)
    (detail,) = raised.value.fal_body()["detail"]
    assert detail["loc"] == ["body", "prompt"] and detail["type"] == "value_error"
    assert detail["ctx"] == {
        "max_tokens": 256,
        "received_tokens": real_count(tokenizers, "pile_t5xl", too_long),
        "tokenizer": "pile_t5xl",
    }


def test_the_schema_carries_the_token_bound(endpoints: dict[str, Endpoint]) -> None:
    prompt = endpoints["flux-dev"].json_schema()["properties"]["prompt"]
    assert (prompt["x-max-tokens"], prompt["x-tokenizer"]) == (512, "t5xxl")
    assert "x-max-tokens" not in endpoints["flux-dev"].json_schema()["properties"]["guidance"]


def test_tokenizers_are_read_once_when_endpoints_load(
    endpoints: dict[str, Endpoint], tokenizers: Path
) -> None:
    expected = real_count(tokenizers, "t5xxl", WORDS * 100)
    shutil.rmtree(tokenizers)  # nothing can be read from the files any more

    with pytest.raises(RequestError) as raised:
        endpoints["flux-schnell"].parse({"prompt": WORDS * 100}, strings=False)
    assert raised.value.errors[0]["received_tokens"] == expected


TOKEN_PRICED: Template = {
    **SOLID,
    "fields": {
        **SOLID["fields"],
        "note": {
            "type": "string",
            "default": "",
            "accepted_only": True,
            "max_tokens": 128,
            "tokenizer": "t5xxl",
            "affects_price": True,
        },
    },
    "pricing": {
        "base": 0.001,
        "add": [{"field": "note", "per_unit": 0.25, "per_tokens": 16}],
        "multiply": [{"field": "batch"}],
    },
}
"""The minimal template with a prompt-like field priced 0.25 per started block of 16 T5 tokens."""


def test_a_template_can_price_a_prompt_per_started_block_of_tokens(
    tmp_path: Path, registry: NodeRegistry, tokenizers: Path
) -> None:
    write(tmp_path, "priced", TOKEN_PRICED)
    endpoint = load_endpoints(tmp_path, registry)["priced"]

    for note in ("", "a cat", WORDS, WORDS * 2, WORDS * 3):
        for batch in (1, 3):
            tokens = real_count(tokenizers, "t5xxl", note)
            expected = (0.001 + 0.25 * math.ceil(tokens / 16)) * batch
            params = endpoint.parse({"note": note, "batch": batch}, strings=False)
            assert endpoint.cost(params) == pytest.approx(expected)
    assert (
        endpoint.pricing.describe() == "(0.001 + 0.25 * started blocks of 16 T5-XXL tokens in note) * batch"
    )
    assert endpoint.json_schema()["properties"]["note"]["x-affects-price"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokenizer": None}, "max_tokens must be a positive integer, on a string field, with a tokenizer"),
        ({"tokenizer": "gpt2"}, "with a tokenizer (clip_l, t5xxl, pile_t5xl)"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"max_tokens": None, "tokenizer": None}, "is priced per_tokens, so it needs max_tokens"),
    ],
)
def test_a_token_bound_or_price_that_cannot_work_stops_start_up(
    tmp_path: Path, registry: NodeRegistry, models: Path, change: dict[str, object], message: str
) -> None:
    note = {k: v for k, v in {**TOKEN_PRICED["fields"]["note"], **change}.items() if v is not None}
    write(tmp_path, "priced", {**TOKEN_PRICED, "fields": {**TOKEN_PRICED["fields"], "note": note}})
    with pytest.raises(EndpointError, match=r"priced\.json: field 'note': ") as raised:
        load_endpoints(tmp_path, registry)
    assert message in str(raised.value)


def test_an_example_over_the_token_bound_stops_start_up(
    tmp_path: Path, registry: NodeRegistry, models: Path
) -> None:
    note = {**TOKEN_PRICED["fields"]["note"], "example": WORDS * 10}
    write(tmp_path, "priced", {**TOKEN_PRICED, "fields": {**TOKEN_PRICED["fields"], "note": note}})
    with pytest.raises(
        EndpointError, match=r"priced\.json: field 'note': example: note must be at most 128 "
    ):
        load_endpoints(tmp_path, registry)


def test_per_tokens_is_a_positive_block_size(tmp_path: Path, registry: NodeRegistry, models: Path) -> None:
    pricing = {**TOKEN_PRICED["pricing"], "add": [{"field": "note", "per_tokens": 0}]}
    write(tmp_path, "priced", {**TOKEN_PRICED, "pricing": pricing})
    with pytest.raises(EndpointError, match=r"pricing: add\[0\]: per_tokens must be a positive integer"):
        load_endpoints(tmp_path, registry)
