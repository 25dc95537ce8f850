"""Rules for user ids, room names and message text (docs/protocol.md, "Identifiers" and "REST")."""

from __future__ import annotations

import re
import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chattrio import validation
from chattrio.validation import (
    MAX_ROOM_NAME,
    MAX_TEXT,
    MAX_USER_ID,
    InvalidInput,
    check_client_msg_id,
    check_message_text,
    normalize_room_name,
    normalize_user_id,
    skeleton,
)

# User ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id",
    [
        "alice",
        "a",
        "a1_b-c.d",
        "김철수",
        "ünïcode",
        "ωμέγα",
        "محمد",
        "用户",
        "x" * MAX_USER_ID,
        "...",
        "_-.",
        "अनिल",
        "सुमित्रा",
        "วิชัย",
        "สมชาย",
        "田中たなか",
        "カタカナ漢字",
        "홍길동",
        "x\u0301",
    ],
)
def test_valid_user_ids_are_kept(user_id):
    assert normalize_user_id(user_id) == user_id


@pytest.mark.parametrize(
    "user_id, reason",
    [
        ("", "1-32 characters, got 0"),
        ("x" * (MAX_USER_ID + 1), "1-32 characters, got 33"),
        ("a b", "' '"),
        (" alice", "' '"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        ("😀", "'😀'"),
        ("bob😀", "'😀'"),
        ("a@b", "'@'"),
        ("a\tb", "'\\t'"),
        ("a\x00b", "'\\x00'"),
        ("a\u200bb", "'\\u200b'"),  # zero-width space (Cf)
        ("<script>", "'<'"),
        ("\u0301x", "'\u0301'"),  # a combining mark needs a letter before it
        ("a\ud800b", "'\\ud800'"),  # a lone surrogate
        ("\u3164", "invisible"),  # Hangul filler, a letter (Lo) that shows nothing
        ("alice\u3164", "invisible"),
        ("\u3164alice", "invisible"),
        ("bob\u115f", "invisible"),
        ("bob\uffa0", "invisible"),
        ("a\u2060b", "invisible"),  # word joiner
        ("\u0430lice", "mixes scripts (cyrillic, latin)"),  # Cyrillic а, then Latin
        ("alic\u0435", "mixes scripts (cyrillic, latin)"),
        ("p\u0430yp\u0430l", "mixes scripts"),
        ("\u03b1lpha", "mixes scripts (greek, latin)"),
        ("٣٤٥", "bidi"),  # Arabic-Indic digits alone break RFC 5893's rule for right-to-left labels
    ],
)
def test_invalid_user_ids_are_rejected_with_a_reason(user_id, reason):
    with pytest.raises(InvalidInput) as exc:
        normalize_user_id(user_id)
    assert reason in str(exc.value)


def test_user_id_is_nfc_normalised():
    decomposed = "u\u0308nic\u0327ode"  # u + combining diaeresis, c + combining cedilla
    assert unicodedata.normalize("NFC", decomposed) != decomposed
    result = normalize_user_id(decomposed)
    assert result == "üniçode"
    assert unicodedata.is_normalized("NFC", result)
    # the composed and decomposed spellings are the same user
    assert normalize_user_id("üniçode") == result


def test_user_id_length_is_counted_after_normalisation():
    # 32 decomposed "é" are 64 code points but 32 after NFC: accepted
    decomposed = "e\u0301" * MAX_USER_ID
    assert len(decomposed) == 2 * MAX_USER_ID
    assert normalize_user_id(decomposed) == "é" * MAX_USER_ID
    with pytest.raises(InvalidInput):
        normalize_user_id("e\u0301" * (MAX_USER_ID + 1))


@pytest.mark.parametrize(
    "raw, user_id",
    [
        ("Alice", "alice"),
        ("ALICE", "alice"),
        ("ａｌｉｃｅ", "alice"),
        ("Ａｌｉｃｅ", "alice"),
        ("A1_B-C.D", "a1_b-c.d"),
        ("ΩΜΈΓΑ", "ωμέγα"),
        ("ＢＯＢ１２３", "bob123"),
    ],
)
def test_user_ids_are_width_and_case_folded(raw, user_id):
    """RFC 8265 UsernameCaseMapped: "Alice" and fullwidth "ａｌｉｃｅ" are the user "alice"."""
    assert normalize_user_id(raw) == user_id


def test_hindi_and_thai_names_keep_their_vowel_signs():
    # U+093F DEVANAGARI VOWEL SIGN I (Mc) and U+0E34 THAI CHARACTER SARA I (Mn) are marks, not letters
    assert normalize_user_id("अनिल") == "अनिल" and unicodedata.category("अनिल"[2]) == "Mc"
    assert normalize_user_id("วิชัย") == "วิชัย" and unicodedata.category("วิชัย"[1]) == "Mn"


@pytest.mark.parametrize(
    "one, other",
    [
        ("alice", "a1ice"),
        ("alice", "aIice"),
        ("mary", "rnary"),
        ("ace", "\u0430\u0441\u0435"),  # Cyrillic асе
        ("pope", "\u0440\u043e\u0440\u0435"),
        ("bob", "b\u03bfb"),
    ],
)
def test_look_alike_ids_share_a_skeleton(one, other):
    assert one != other
    assert skeleton(one) == skeleton(other)


@pytest.mark.parametrize("one, other", [("alice", "alicia"), ("bob", "rob"), ("김철수", "김철호"), ("अनिल", "अनल")])
def test_different_ids_have_different_skeletons(one, other):
    assert skeleton(one) != skeleton(other)


# Room names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, name",
    [
        ("general", "general"),
        ("  general  ", "general"),
        ("\tfoo bar\n", "foo bar"),
        ("x" * MAX_ROOM_NAME, "x" * 100),
        (" " + "y" * MAX_ROOM_NAME + " ", "y" * 100),
        ("방", "방"),
        ("a  b", "a  b"),
    ],
)
def test_room_names_are_trimmed(raw, name):
    assert normalize_room_name(raw) == name


@pytest.mark.parametrize("raw", ["", " ", " \t\n ", "\u3000", "x" * (MAX_ROOM_NAME + 1), " " + "z" * 101])
def test_bad_room_names_are_rejected(raw):
    with pytest.raises(InvalidInput, match="1-100 characters after trimming"):
        normalize_room_name(raw)


@pytest.mark.parametrize(
    "raw, name",
    [
        ("\u202egeneral", "general"),  # right-to-left override
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ("\u2066a\u2069b\u200f", "ab"),
        ("a\x07b\x08c\x7f", "abc"),
        ("\x1b[31mred\x1b[0m room", "red room"),
        ("\x1b]0;title\x07ok", "ok"),
        ("a\nb\tc", "a b c"),
        ("\u200b general \u200b", "\u200b general \u200b"),
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),
    ],
)
def test_room_names_lose_control_and_bidi_characters(raw, name):
    assert normalize_room_name(raw) == name


@pytest.mark.parametrize(
    "raw", ["\u200b", "\u3164", "\u3164\u3164", "\u2800", "\u200b\u3164\ufeff", "\u0301", "\x1b[0m\u200b"]
)
def test_room_name_needs_a_visible_character(raw):
    with pytest.raises(InvalidInput, match="visible character|1-100 characters"):
        normalize_room_name(raw)


@pytest.mark.parametrize("raw", ["a\x00b", "\x00", "general\ud800"])
def test_room_name_that_postgresql_cannot_hold_is_refused(raw):
    with pytest.raises(InvalidInput, match="must not contain"):
        normalize_room_name(raw)


@pytest.mark.parametrize("raw", [None, 42, ["general"], {"name": "x"}, b"general", True])
def test_room_name_must_be_a_string(raw):
    with pytest.raises(InvalidInput, match="must be a string"):
        normalize_room_name(raw)


# Message text --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["hi", " hi ", "x" * MAX_TEXT, "가" * MAX_TEXT, "😀" * MAX_TEXT, "\n.\n", "0"])
def test_valid_text_is_returned_unchanged(text):
    assert check_message_text(text) == text


@pytest.mark.parametrize("text", ["", " ", "\n\t\r ", "\u00a0\u2003\u3000"])
def test_empty_or_whitespace_text_is_rejected(text):
    with pytest.raises(InvalidInput, match="must not be empty"):
        check_message_text(text)


def test_text_over_the_limit_is_rejected_with_its_length():
    with pytest.raises(InvalidInput, match=f"at most {MAX_TEXT} characters, got {MAX_TEXT + 1}"):
        check_message_text("x" * (MAX_TEXT + 1))


@pytest.mark.parametrize("text", ["a\x00b", "\x00", "hi\ud800", "\udfff"])
def test_text_postgresql_cannot_hold_is_rejected(text):
    with pytest.raises(InvalidInput, match="message text must not contain"):
        check_message_text(text)


# clientMsgId ----------------------------------------------------------------------------------


@pytest.mark.parametrize("client_msg_id", [None, "c-1", "5b0f6c0e-9d3f-4c1e-9a55-1f0c2d7a8e01", "메시지-1"])
def test_good_client_msg_ids_are_kept(client_msg_id):
    assert check_client_msg_id(client_msg_id) == client_msg_id


@pytest.mark.parametrize("client_msg_id", ["c\x00", "\ud800", "c\n1", "\x1b[2J", "c\u202e1"])
def test_client_msg_ids_with_control_characters_are_rejected(client_msg_id):
    with pytest.raises(InvalidInput, match="clientMsgId must not contain"):
        check_client_msg_id(client_msg_id)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=MAX_USER_ID))
def test_a_plain_ascii_id_gets_what_the_full_rules_give(user_id):
    fast = normalize_user_id(user_id)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "_PLAIN_ASCII_ID", re.compile(r"(?!)"))  # matches nothing
        assert normalize_user_id(user_id) == fast
