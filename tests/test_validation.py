"""Rules for user ids, room names and message text (docs/protocol.md, "Identifiers" and "REST")."""

from __future__ import annotations

import unicodedata

import pytest

from chattrio.validation import (
    MAX_ROOM_NAME,
    MAX_TEXT,
    MAX_USER_ID,
    InvalidInput,
    check_message_text,
    normalize_room_name,
    normalize_user_id,
)

# User ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id",
    ["alice", "a", "A1_b-c.d", "김철수", "ünïcode", "Ωμέγα", "محمد", "用户", "٣٤٥", "x" * MAX_USER_ID, "...", "_-."],
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


def test_a_combining_mark_that_does_not_compose_is_rejected():
    # "x" + combining acute has no precomposed form: the mark (Mn) stays and is not a letter
    with pytest.raises(InvalidInput):
        normalize_user_id("x\u0301")


# Room names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, name",
    [("general", "general"), ("  general  ", "general"), ("\tfoo bar\n", "foo bar"), ("x" * MAX_ROOM_NAME, "x" * 100),
     (" " + "y" * MAX_ROOM_NAME + " ", "y" * 100), ("방", "방"), ("a  b", "a  b")],
)
def test_room_names_are_trimmed(raw, name):
    assert normalize_room_name(raw) == name


@pytest.mark.parametrize("raw", ["", " ", " \t\n ", "\u3000", "x" * (MAX_ROOM_NAME + 1), " " + "z" * 101])
def test_bad_room_names_are_rejected(raw):
    with pytest.raises(InvalidInput, match="1-100 characters after trimming"):
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
