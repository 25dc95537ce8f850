"""WebSocket conformance: the Autobahn TestSuite's fuzzing client against the node (issue 14).

The node runs with CHATTRIO_TEST_ECHO, whose /ws-echo route echoes every message through the
framing, buffering and close handshake of /ws. scripts/autobahn.sh sets up CPython 2.7 and the
suite in .cache/py27/ (downloads on the first run only). Sections 12 and 13 (permessage-deflate)
are left out: the node offers no compression. docs/security.md has the results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from conftest import REPO
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

AUTOBAHN = REPO / "scripts" / "autobahn.sh"
AGENT = "chattrio"
SECTIONS = {"1", "2", "3", "4", "5", "6", "7", "9", "10"}
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# The set-up downloads and compiles: 3 min on the shared 2-core machine, 13 min under a load of 70
# (scripts/test.sh runs it before pytest); the run's section 9 sends 16 MiB messages.
INSTALL_TIMEOUT = 1800
RUN_TIMEOUT = 1200


def failures(report: dict[str, dict]) -> dict[str, str]:
    """Case id -> "behavior/behaviorClose" for each case of SECTIONS that did not pass."""
    return {
        case: f"{result['behavior']}/{result['behaviorClose']}"
        for case, result in report.items()
        if case.split(".")[0] in SECTIONS and not {result["behavior"], result["behaviorClose"]} <= PASSING
    }


def test_failures_lists_the_cases_that_did_not_pass():
    report = {
        "1.1.1": {"behavior": "OK", "behaviorClose": "OK"},
        "6.4.1": {"behavior": "NON-STRICT", "behaviorClose": "OK"},
        "7.1.6": {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL"},
        "3.2": {"behavior": "FAILED", "behaviorClose": "OK"},
        "7.9.1": {"behavior": "OK", "behaviorClose": "WRONG CODE"},
        "12.1.1": {"behavior": "UNIMPLEMENTED", "behaviorClose": "UNIMPLEMENTED"},
    }
    assert failures(report) == {"3.2": "FAILED/OK", "7.9.1": "OK/WRONG CODE"}


async def test_echo_route_echoes_text_and_binary_and_says_so_in_the_log(make_cluster):
    node = (await make_cluster(1, test_echo=1)).nodes[0]
    async with open_websocket_url(f"ws://127.0.0.1:{node.port}/ws-echo") as ws:
        for message in ("héllo", b"\x00\xff" * 40_000, "x" * 70_000):  # larger than /ws takes
            await ws.send_message(message)
            with trio.fail_after(15):
                assert await ws.get_message() == message
    assert "CHATTRIO_TEST_ECHO is on" in node.log_tail()


async def test_echo_route_closes_a_message_over_its_cap_with_1009(make_cluster):
    from chattrio.transport.listener import ECHO_MAX_MESSAGE_BYTES

    node = (await make_cluster(1, test_echo=1)).nodes[0]
    async with open_websocket_url(f"ws://127.0.0.1:{node.port}/ws-echo", max_message_size=1 << 30) as ws:
        await ws.send_message(b"z" * (ECHO_MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(60):
            await ws.get_message()
    assert closed.value.reason.code == 1009


async def test_echo_route_is_off_by_default(cluster):
    with pytest.raises(HandshakeError) as refused:
        async with open_websocket_url(f"{cluster.urls[0].replace('http', 'ws')}/ws-echo"):
            pass
    assert refused.value.status_code == 404


async def run_suite(url: str, folder: Path, cases: list[str]) -> dict[str, dict]:
    """Run the fuzzing client on `cases` against `url`; its report, by case id."""
    folder.mkdir()
    spec = {
        "outdir": str(folder / "reports"),
        "servers": [{"agent": AGENT, "url": url}],
        "cases": cases,
        "exclude-cases": ["12.*", "13.*"],
        "exclude-agent-cases": {},
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    with open(folder / "wstest.log", "wb") as log, trio.fail_after(RUN_TIMEOUT):
        await trio.run_process(
            [str(AUTOBAHN), "wstest", "-m", "fuzzingclient", "-s", "spec.json"], cwd=folder, stdout=log, stderr=log
        )
    return json.loads((folder / "reports" / "index.json").read_text())[AGENT]


async def test_autobahn_fuzzing_client_passes_sections_1_to_10(make_cluster, tmp_path):
    with trio.fail_after(INSTALL_TIMEOUT):
        await trio.run_process([str(AUTOBAHN), "install"])
    node = (await make_cluster(1, test_echo=1)).nodes[0]
    url = f"ws://127.0.0.1:{node.port}/ws-echo"
    report = await run_suite(url, tmp_path / "all", ["*"])
    assert {case.split(".")[0] for case in report} == SECTIONS
    if failures(report):
        # Most cases give the node 1 s to answer, which a busy machine can miss: a case fails
        # only if it fails again when run alone.
        report.update(await run_suite(url, tmp_path / "retry", sorted(failures(report))))
    assert not failures(report), f"Autobahn cases that failed (reports: {tmp_path}): {failures(report)}"
    assert node.alive
