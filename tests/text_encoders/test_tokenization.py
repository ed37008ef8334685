"""Prompts are tokenized and weighted as ComfyUI does it, so a graph gives ComfyUI's conditioning."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTokenizer, T5Tokenizer

from engine.diffusion.text_encoders.prompt_weights import parse_prompt_weights

BOS, CLIP_EOS = 49406, 49407
T5_EOS, T5_PAD = 1, 0
PILE_EOS, PILE_PAD = 2, 1


def ids(window):
    return [token for token, _ in window]


@pytest.fixture
def clip_words(text_encoders_dir):
    tokenizer = CLIPTokenizer.from_pretrained(text_encoders_dir / "tokenizers" / "clip_l")
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture
def t5_words(text_encoders_dir):
    tokenizer = T5Tokenizer.from_pretrained(text_encoders_dir / "tokenizers" / "t5xxl")
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_clip_prompt_fills_one_77_token_window_between_bos_and_eos_padded_with_eos(flux_clip, clip_words):
    words = clip_words("a red cat")

    (window,) = flux_clip.tokenize("a red cat")["l"]

    assert len(window) == 77
    assert ids(window) == [BOS, *words, CLIP_EOS] + [CLIP_EOS] * (75 - len(words))
    assert {weight for _, weight in window} == {1.0}


def test_a_long_clip_prompt_is_cut_into_77_token_windows(clip_l_clip, clip_words):
    cat = clip_words("cat")
    prompt = "cat " * 100

    windows = clip_l_clip.tokenize(prompt)["l"]
    cond, pooled = clip_l_clip.encode_from_tokens(clip_l_clip.tokenize(prompt), return_pooled=True)

    assert [len(window) for window in windows] == [77, 77]
    assert ids(windows[0]) == [BOS, *cat * 75, CLIP_EOS]
    assert ids(windows[1]) == [BOS, *cat * 25, CLIP_EOS] + [CLIP_EOS] * 50
    assert cond.shape == (1, 154, 64) and pooled.shape == (1, 64)


def test_a_short_piece_that_does_not_fit_moves_whole_to_the_next_window(clip_l_clip, clip_words):
    abc = clip_words("a b c")

    windows = clip_l_clip.tokenize("cat " * 74 + "(a b c:1.2)")["l"]

    assert ids(windows[0])[75:] == [CLIP_EOS, CLIP_EOS]
    assert windows[1][: 1 + len(abc)] == [(BOS, 1.0)] + [(token, 1.2) for token in abc]


def test_a_t5_prompt_is_one_sequence_closed_by_eos_and_padded_to_256(flux_clip, t5_words):
    words = t5_words("a red cat")

    (window,) = flux_clip.tokenize("a red cat")["t5xxl"]

    assert ids(window) == [*words, T5_EOS] + [T5_PAD] * (255 - len(words))


def test_a_t5_prompt_longer_than_256_tokens_is_kept_whole(flux_clip, t5_words):
    words = t5_words("cat " * 300)

    (window,) = flux_clip.tokenize("cat " * 300)["t5xxl"]

    assert len(words) > 256
    assert ids(window) == [*words, T5_EOS]


def test_pile_t5_has_no_bos_ends_with_eos_2_and_pads_with_1_to_256(aura_clip):
    (window,) = aura_clip.tokenize("a red cat")["pile_t5xl"]
    tokens = ids(window)
    end = tokens.index(PILE_EOS)

    assert len(tokens) == 256
    assert 0 < end < 10 and BOS not in tokens
    assert tokens[end + 1 :] == [PILE_PAD] * (255 - end)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a (cat) dog", [("a ", 1.0), ("cat", 1.1), (" dog", 1.0)]),
        ("((cat))", [("cat", 1.1 * 1.1)]),
        ("(cat:1.5)", [("cat", 1.5)]),
        ("((cat:0.5))", [("cat", 0.5)]),
        ("(a (b:2) c)", [("a ", 1.1), ("b", 2.0), (" c", 1.1)]),
        ("\\(cat\\) (dog)", [("(cat) ", 1.0), ("dog", 1.1)]),
        ("(cat:big)", [("cat:big", 1.1)]),
        ("(:1.2)", [(":1.2", 1.1)]),
        ("a (b", [("a ", 1.0), ("(b", 1.0)]),
        ("a) (b)", [("a) (b)", 1.0)]),
        ("", []),
    ],
)
def test_emphasis_syntax(prompt, expected):
    parsed = parse_prompt_weights(prompt)

    assert [segment for segment, _ in parsed] == [segment for segment, _ in expected]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in expected])


def test_emphasis_pushes_a_tokens_state_away_from_the_empty_prompts_state(flux_clip):
    weighted = flux_clip.tokenize("a (red:1.5) cat")
    plain = {
        key: [[(token, 1.0) for token, _ in window] for window in windows]
        for key, windows in weighted.items()
    }
    emphasised = [j for j, (_, weight) in enumerate(weighted["t5xxl"][0]) if weight == 1.5]

    cond, pooled = flux_clip.encode_from_tokens(weighted, return_pooled=True)
    plain_cond, plain_pooled = flux_clip.encode_from_tokens(plain, return_pooled=True)
    empty_cond = flux_clip.encode_from_tokens(flux_clip.tokenize(""))

    expected = plain_cond.clone()
    empty, state = empty_cond[0, emphasised], plain_cond[0, emphasised]
    expected[0, emphasised] = empty + (state - empty) * 1.5
    assert emphasised
    torch.testing.assert_close(cond, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(cond, plain_cond)
    torch.testing.assert_close(pooled, plain_pooled, rtol=0, atol=1e-5)


def test_pile_t5_states_after_the_first_eos_are_zero(aura_clip):
    tokens = aura_clip.tokenize("a red cat")
    end = ids(tokens["pile_t5xl"][0]).index(PILE_EOS)

    cond = aura_clip.encode_from_tokens(tokens)

    assert torch.count_nonzero(cond[0, end + 1 :]) == 0
    assert bool((cond[0, : end + 1].abs().sum(dim=-1) > 0).all())


def test_t5xxl_for_flux_sees_its_padding_and_gives_it_states(flux_clip):
    tokens = flux_clip.tokenize("a red cat")
    end = ids(tokens["t5xxl"][0]).index(T5_EOS)

    cond = flux_clip.encode_from_tokens(tokens)

    assert bool((cond[0, end + 1 :].abs().sum(dim=-1) > 0).all())
