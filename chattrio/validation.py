"""Rules for what users type: user ids, room names, message text."""

from __future__ import annotations

import unicodedata

MAX_USER_ID = 32
MAX_ROOM_NAME = 100
MAX_TEXT = 4000
_ID_PUNCTUATION = frozenset("_-.")


class InvalidInput(ValueError):
    """A value a user gave breaks a rule; str(exc) is the reason shown to them."""


def normalize_user_id(raw: str) -> str:
    user_id = unicodedata.normalize("NFC", raw)
    if not 1 <= len(user_id) <= MAX_USER_ID:
        raise InvalidInput(f"user id must be 1-{MAX_USER_ID} characters, got {len(user_id)}")
    for char in user_id:
        if char in _ID_PUNCTUATION or unicodedata.category(char)[0] in "LN":
            continue
        raise InvalidInput(
            f"user id may contain only letters, digits, '_', '-' and '.', not {char!r}"
        )
    return user_id


def normalize_room_name(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidInput("room name must be a string")
    name = raw.strip()
    if not 1 <= len(name) <= MAX_ROOM_NAME:
        raise InvalidInput(f"room name must be 1-{MAX_ROOM_NAME} characters after trimming")
    return name


def check_message_text(text: str) -> str:
    if not text.strip():
        raise InvalidInput("message text must not be empty")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"message text must be at most {MAX_TEXT} characters, got {len(text)}")
    return text
