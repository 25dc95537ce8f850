"""The local stack's ports are kept out of the kernel's ephemeral range (scripts/lib.sh).

They lie inside it (32768-60999): while a service is down, a client's outgoing connection can be
given its port as a source port, and the service then cannot bind it when it starts again.
"""

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def _ports(ranges: str) -> set[int]:
    """The ports of a kernel port list such as '55442,59102-59103'."""
    ports: set[int] = set()
    for part in filter(None, ranges.strip().split(",")):
        low, _, high = part.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return ports


def _reserve(file: Path, *ports: int) -> None:
    subprocess.run(
        ["bash", "-c", 'source "$0/scripts/lib.sh"; reserve_service_ports "$@"', str(REPO), *map(str, ports)],
        env=dict(os.environ, CHATTRIO_STACK="test", CHATTRIO_RESERVED_PORTS_FILE=str(file)),
        check=True,
    )


def test_reserving_adds_to_the_ports_already_reserved(tmp_path):
    file = tmp_path / "reserved"
    file.write_text("1000-1002,2000\n")
    _reserve(file, 55442, 59102)
    assert _ports(file.read_text()) == {1000, 1001, 1002, 2000, 55442, 59102}


def test_reserving_into_an_empty_list(tmp_path):
    file = tmp_path / "reserved"
    file.write_text("\n")
    _reserve(file, 56389)
    assert _ports(file.read_text()) == {56389}


@pytest.mark.skipif(not os.access(RESERVED_PORTS, os.W_OK), reason="reserving ports needs root")
def test_the_running_stacks_ports_are_reserved(stack_env):
    service_ports = {
        urlsplit(stack_env["CHATTRIO_PG_DSN"]).port,
        urlsplit(stack_env["CHATTRIO_REDIS_URL"]).port,
        int(stack_env["CHATTRIO_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1]),
    }
    assert service_ports <= _ports(RESERVED_PORTS.read_text())
