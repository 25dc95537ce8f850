"""Rules for what users type: user ids, room names, message text, clientMsgId.

Every text field is checked here, at the edge, before it reaches Kafka or PostgreSQL: a value
that PostgreSQL `text` or JSON cannot carry (U+0000, lone surrogates) would otherwise be
acknowledged and then stop whoever tries to store it.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from confusable_homoglyphs import categories, confusables
from precis_i18n import get_profile

MAX_USER_ID = 32
MAX_ROOM_NAME = 100
MAX_TEXT = 4000
_ID_PUNCTUATION = frozenset("_-.")
_USERNAME = get_profile("UsernameCaseMapped")  # RFC 8265 section 3.3: width and case folded
_PLAIN_ASCII_ID = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_USER_ID}}}")

# Scripts that may share one id: those that are not a script of their own, and the mixes that
# one language writes with (UTS #39 "highly restrictive": Japanese, Chinese, Korean).
_NEUTRAL_SCRIPTS = frozenset({"COMMON", "INHERITED"})
_ALLOWED_SCRIPT_MIXES = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "BOPOMOFO"}),
    frozenset({"HAN", "HANGUL"}),
)

# Characters that show nothing (Default_Ignorable_Code_Point, or blank by design): the Hangul
# fillers among them are letters (Lo), so a category check alone lets them through.
_INVISIBLE = frozenset("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u2800\u3164\ufeff\uffa0") | frozenset(
    chr(c)
    for c in (
        *range(0x180B, 0x1810),
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
        *range(0xFE00, 0xFE10),
        *range(0xFFF0, 0xFFF9),
        *range(0x1BCA0, 0x1BCA4),
        *range(0x1D173, 0x1D17B),
        *range(0xE0000, 0xE1000),
    )
)
# Characters that reorder the text around them (bidi embeddings, overrides, isolates, marks).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ANSI_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")


class InvalidInput(ValueError):
    """A value a user gave breaks a rule; str(exc) is the reason shown to them."""


# What PostgreSQL and JSON can carry --------------------------------------------------------------


def check_storable(value: str, what: str) -> str:
    """Refuse U+0000 (PostgreSQL `text` cannot hold it) and lone surrogates (not UTF-8)."""
    # Runs on every SEND: str methods in C (a regex character class is several times slower).
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain '\\x00' (at {value.index(chr(0))})")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(f"{what} must not contain {exc.object[exc.start]!r} (at {exc.start})") from None
    return value


# User ids ----------------------------------------------------------------------------------------


def normalize_user_id(raw: str) -> str:
    """The canonical form of a user id (RFC 8265 UsernameCaseMapped, then this project's rules)."""
    if _PLAIN_ASCII_ID.fullmatch(raw):
        # Every rule below leaves such an id as it is but for the case: skip PRECIS (62 µs a
        # sign-in on the AMD EPYC host of docs/benchmarks.md, this 0.7 µs).
        return raw.lower()
    if not raw:
        raise InvalidInput(f"user id must be 1-{MAX_USER_ID} characters, got 0")
    check_storable(raw, "user id")
    _check_visible(raw)
    try:
        user_id = _USERNAME.enforce(raw)
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"user id may not contain {exc.object[exc.start : exc.end]!r} ({exc.reason})") from None
    if not 1 <= len(user_id) <= MAX_USER_ID:
        raise InvalidInput(f"user id must be 1-{MAX_USER_ID} characters, got {len(user_id)}")
    _check_characters(user_id)
    _check_single_script(user_id)
    return user_id


def _check_visible(user_id: str) -> None:
    """Before PRECIS, whose own refusal of these reads "DISALLOWED/precis_ignorable_properties"."""
    for char in user_id:
        if char in _INVISIBLE:
            raise InvalidInput(f"user id may not contain the invisible character {char!r}")


def _check_characters(user_id: str) -> None:
    for position, char in enumerate(user_id):
        kind = unicodedata.category(char)
        if kind[0] == "M" and position > 0 and kind != "Me":
            continue  # a vowel sign or accent inside a word (Hindi, Thai)
        if char in _ID_PUNCTUATION or kind[0] in "LN":
            continue
        raise InvalidInput(f"user id may contain only letters, marks, digits, '_', '-' and '.', not {char!r}")


def _check_single_script(user_id: str) -> None:
    scripts = {categories.alias(char) for char in user_id} - _NEUTRAL_SCRIPTS
    if len(scripts) > 1 and not any(scripts <= mix for mix in _ALLOWED_SCRIPT_MIXES):
        raise InvalidInput(f"user id mixes scripts ({', '.join(sorted(scripts)).lower()}): use one")


def skeleton(user_id: str) -> str:
    """The UTS #39 skeleton: two ids with the same skeleton look alike ("аlice", "a1ice", "alice")."""
    decomposed = unicodedata.normalize("NFD", user_id)
    mapped = "".join(_prototypes().get(char, char) for char in decomposed)
    return unicodedata.normalize("NFD", mapped)


@functools.cache
def _prototypes() -> dict[str, str]:
    """Character -> its confusables.txt prototype, from confusable_homoglyphs' table.

    That table lists each (source, prototype) pair both ways. A source has one entry, its
    prototype; a prototype lists its sources. For a pair that only has each other, which is which
    cannot be told, and either choice gives both the same skeleton.
    """

    def plain(text: str) -> str:
        return text.replace("\u200e", "")  # the table wraps right-to-left characters in LRM marks

    table = {
        plain(key): [plain(entry["c"]) for entry in entries] for key, entries in confusables.confusables_data.items()
    }
    prototypes = {}
    for char, entries in table.items():
        if len(char) != 1 or len(entries) != 1:
            continue  # a prototype (or a sequence)
        target = entries[0]
        others = table.get(target, [])
        if len(target) > 1 or len(others) > 1 or char > target:
            prototypes[char] = target
    return prototypes


# Room names --------------------------------------------------------------------------------------


def normalize_room_name(raw: object) -> str:
    """Trimmed, without control and bidi characters, with at least one visible character."""
    if not isinstance(raw, str):
        raise InvalidInput("room name must be a string")
    check_storable(raw, "room name")
    name = _ANSI_ESCAPE.sub("", raw)
    name = "".join(_room_name_char(char) for char in name).strip()
    if not 1 <= len(name) <= MAX_ROOM_NAME:
        raise InvalidInput(f"room name must be 1-{MAX_ROOM_NAME} characters after trimming")
    if not any(_visible(char) for char in name):
        raise InvalidInput("room name needs at least one visible character")
    return name


def _room_name_char(char: str) -> str:
    if char in _BIDI_CONTROLS:
        return ""
    if unicodedata.category(char) == "Cc":
        return " " if char.isspace() else ""  # a tab or line break still separates words
    return char


def _visible(char: str) -> bool:
    return char not in _INVISIBLE and unicodedata.category(char)[0] not in "ZCM"


# Messages ----------------------------------------------------------------------------------------


def check_message_text(text: str) -> str:
    if not text.strip():
        raise InvalidInput("message text must not be empty")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"message text must be at most {MAX_TEXT} characters, got {len(text)}")
    return check_storable(text, "message text")


def check_client_msg_id(client_msg_id: str | None) -> str | None:
    """clientMsgId is stored and echoed: storable, and no control characters."""
    if client_msg_id is None:
        return None
    check_storable(client_msg_id, "clientMsgId")
    for char in client_msg_id:
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise InvalidInput(f"clientMsgId must not contain the control character {char!r}")
    return client_msg_id
