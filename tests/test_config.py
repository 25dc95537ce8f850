"""Settings from CHATTRIO_* environment variables, overridden by explicit values."""

from __future__ import annotations

import dataclasses

import pytest

from chattrio.config import Settings, settings_from_env


def test_defaults_without_environment():
    settings = settings_from_env({})
    assert settings == Settings()
    assert settings.max_frame_bytes == 64 * 1024
    assert settings.leave_grace_seconds == 15.0
    assert settings.allowed_origins == ()


def test_every_field_type_is_converted():
    env = {
        "CHATTRIO_NODE_ID": "node-9",
        "CHATTRIO_PORT": "9001",
        "CHATTRIO_LEAVE_GRACE_SECONDS": "0.5",
        "CHATTRIO_LOG_JSON": "true",
        "CHATTRIO_ALLOWED_ORIGINS": "http://a.example, http://b.example,,",
        "CHATTRIO_SECRET": "s3cret",
    }
    settings = settings_from_env(env)
    assert settings.node_id == "node-9"
    assert settings.port == 9001 and isinstance(settings.port, int)
    assert settings.leave_grace_seconds == 0.5
    assert settings.log_json is True
    assert settings.allowed_origins == ("http://a.example", "http://b.example")
    assert settings.secret == "s3cret"


def test_every_field_can_be_set_from_the_environment():
    # every annotation has a converter; a new field with a new type would fail here, not at boot
    env = {}
    for field in dataclasses.fields(Settings):
        default = getattr(Settings(), field.name)
        if isinstance(default, tuple):
            env["CHATTRIO_" + field.name.upper()] = ",".join(default)
        else:
            env["CHATTRIO_" + field.name.upper()] = str(default).lower() if isinstance(default, bool) else str(default)
    assert settings_from_env(env) == Settings()


@pytest.mark.parametrize(
    "raw, value",
    [
        ("1", True),
        ("yes", True),
        (" ON ", True),
        ("TRUE", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("", False),
    ],
)
def test_booleans(raw, value):
    assert settings_from_env({"CHATTRIO_LOG_JSON": raw}).log_json is value


@pytest.mark.parametrize(
    "name, raw", [("PORT", "eighty"), ("PORT", "80.5"), ("LEAVE_GRACE_SECONDS", "soon"), ("MAX_CONNECTIONS", "")]
)
def test_bad_numbers_stop_with_a_clear_message(name, raw):
    with pytest.raises(SystemExit) as exc:
        settings_from_env({f"CHATTRIO_{name}": raw})
    assert f"CHATTRIO_{name}={raw!r}" in str(exc.value)
    assert str(exc.value).startswith("config error:")


def test_overrides_win_and_none_overrides_are_ignored():
    env = {"CHATTRIO_PORT": "9001", "CHATTRIO_NODE_ID": "from-env"}
    settings = settings_from_env(env, port=7000, node_id=None)
    assert settings.port == 7000
    assert settings.node_id == "from-env"


def test_unrelated_variables_are_ignored():
    settings = settings_from_env({"CHATTRIO_NOT_A_FIELD": "x", "PORT": "1", "chattrio_port": "2"})
    assert settings.port == Settings().port


def test_topic_names_follow_the_prefix():
    settings = settings_from_env({"CHATTRIO_TOPIC_PREFIX": "t123"})
    assert settings.messages_topic == "t123.messages"
    assert settings.events_topic == "t123.events"


def test_settings_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_internal_port_defaults_to_the_public_port_plus_the_offset():
    assert settings_from_env({"CHATTRIO_PORT": "8081"}).internal_port_number == 18081
    assert settings_from_env({"CHATTRIO_PORT": "8081", "CHATTRIO_INTERNAL_PORT": "9100"}).internal_port_number == 9100
    assert Settings().internal_host == "127.0.0.1"


@pytest.mark.parametrize("idle_timeout", ["25", "10"])
def test_an_idle_timeout_not_longer_than_the_ping_interval_stops_with_a_clear_message(idle_timeout):
    env = {"CHATTRIO_PING_INTERVAL_SECONDS": "25", "CHATTRIO_IDLE_TIMEOUT_SECONDS": idle_timeout}
    with pytest.raises(SystemExit) as exc:
        settings_from_env(env)
    assert str(exc.value).startswith("config error: CHATTRIO_IDLE_TIMEOUT_SECONDS=")


def test_pings_switched_off_accept_any_idle_timeout():
    env = {"CHATTRIO_PING_INTERVAL_SECONDS": "0", "CHATTRIO_IDLE_TIMEOUT_SECONDS": "0"}
    assert settings_from_env(env).ping_interval_seconds == 0


@pytest.mark.parametrize("name", ["CHATTRIO_FANOUT_INTERVAL_MS", "CHATTRIO_KAFKA_LINGER_MS"])
@pytest.mark.parametrize("milliseconds", ["-1", "1001"])
def test_a_pacing_wait_outside_zero_to_a_second_stops_with_a_clear_message(name, milliseconds):
    with pytest.raises(SystemExit) as exc:
        settings_from_env({name: milliseconds})
    assert str(exc.value) == f"config error: {name}={milliseconds} must be 0-1000"


@pytest.mark.parametrize("milliseconds", ["0", "1000"])
def test_a_pacing_wait_of_zero_to_a_second_is_taken(milliseconds):
    settings = settings_from_env(
        {"CHATTRIO_FANOUT_INTERVAL_MS": milliseconds, "CHATTRIO_KAFKA_LINGER_MS": milliseconds}
    )
    assert (settings.fanout_interval_ms, settings.kafka_linger_ms) == (int(milliseconds), int(milliseconds))
