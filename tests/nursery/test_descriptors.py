"""The node's descriptor budget: sessions get what the limit leaves after the node's own needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chattrio.config import Settings
from chattrio.nursery.descriptors import DESCRIPTORS_BESIDES_CLIENTS, sessions_within


def test_a_limit_that_holds_every_connection_keeps_max_connections():
    settings = Settings(max_connections=1000, max_http_connections=100)
    assert sessions_within(65536, settings) == 1000


def test_a_tight_limit_leaves_room_for_http_and_the_nodes_own_descriptors():
    settings = Settings(max_connections=20_000, max_http_connections=512)
    assert sessions_within(20_000, settings) == 20_000 - 512 - DESCRIPTORS_BESIDES_CLIENTS


FIT_AT_LIMIT = """
import resource, sys
from chattrio.config import Settings
from chattrio.nursery.descriptors import fit_to_descriptor_limit
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
try:
    print(fit_to_descriptor_limit(Settings(max_connections=20_000, max_http_connections=512)).max_connections)
except SystemExit as exc:
    print(exc)
"""


def _fit_in_child(limit: int) -> str:
    """Run the fit in a child process, whose descriptor limit the test may lower for good."""
    script = FIT_AT_LIMIT.format(limit=limit)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def test_a_node_under_a_hard_limit_lowers_max_connections_to_what_fits():
    assert _fit_in_child(5000) == str(5000 - 512 - DESCRIPTORS_BESIDES_CLIENTS)


@pytest.mark.parametrize("limit", [512, 700])
def test_a_limit_that_fits_no_session_fails_at_boot_with_a_reason(limit):
    assert "leaves no room for WebSocket sessions" in _fit_in_child(limit)
