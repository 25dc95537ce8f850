"""Writes during the chat: new users signing up and new rooms being created, at a steady rate,
each answer recorded. A chaos run (scripts/chaos.sh) checks that every one was answered (201, 200
or 503) and that every row answered 201 exists afterwards.

A write goes to the nodes in turn; when a node gives no HTTP answer (refused, reset, or silent
for WRITE_TIMEOUT) it goes on to the next one, as a load balancer would, and every attempt is
recorded with the node it went to.
"""

from __future__ import annotations

import time

import trio

from chattrio.bot.config import Node
from chattrio.bot.http import HttpError, HttpPool

# Longer than a node takes to answer 503 when PostgreSQL is away (its own timeouts).
WRITE_TIMEOUT = 15.0
POOL_SIZE = 8


class WriteProbe:
    def __init__(self, nodes: list[Node], run_id: str, user_prefix: str) -> None:
        self.nodes = nodes
        self.run_id = run_id
        self.owner = f"{user_prefix}own{run_id}"
        self.user_prefix = user_prefix
        self.pools = [HttpPool(node, size=POOL_SIZE, timeout=WRITE_TIMEOUT) for node in nodes]
        self.records: list[dict] = []
        self._token: str | None = None

    async def run(self, signups_per_second: float, rooms_per_second: float, start: float, end: float) -> None:
        """Writes between `start` and `end` (trio clock); returns when every answer is in."""
        async with trio.open_nursery() as nursery:
            if signups_per_second > 0:
                nursery.start_soon(self._every, 1 / signups_per_second, start, end, self._signup)
            if rooms_per_second > 0:
                self._token = await self._owner_token()
                nursery.start_soon(self._every, 1 / rooms_per_second, start, end, self._create_room)

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()

    async def _every(self, interval: float, start: float, end: float, write) -> None:
        async with trio.open_nursery() as nursery:
            k = 0
            while (due := start + k * interval) < end:
                await trio.sleep_until(due)
                nursery.start_soon(write, k)
                k += 1

    async def _owner_token(self) -> str:
        record = await self._write("owner", self.owner, 0, "POST", f"/api/user/enter/{self.owner}", None, None)
        if record["status"] not in (200, 201):
            raise RuntimeError(f"the write probe's owner {self.owner} could not log in: {record}")
        return record["body"]["data"]["token"]

    async def _signup(self, k: int) -> None:
        user_id = f"{self.user_prefix}n{self.run_id}x{k}"
        await self._write("signup", user_id, k, "POST", f"/api/user/enter/{user_id}", None, None)

    async def _create_room(self, k: int) -> None:
        name = f"chaos-{self.run_id}-new-{k}"
        await self._write("room", name, k, "POST", "/api/room", {"name": name}, self._token)

    async def _write(self, kind: str, key: str, k: int, method: str, path: str, body, token) -> dict:
        record: dict = {"kind": kind, "key": key, "startedAt": time.time(), "attempts": [], "status": None}
        for turn in range(len(self.nodes)):
            pool = self.pools[(k + turn) % len(self.pools)]
            began = time.time()
            attempt: dict = {"node": pool.node.base_url, "at": began}
            record["attempts"].append(attempt)
            try:
                response = await pool.request(method, path, body, token=token)
            except (HttpError, OSError, trio.TooSlowError) as exc:
                attempt["error"] = f"{type(exc).__name__}: {exc}"[:200]
                attempt["seconds"] = round(time.time() - began, 3)
                continue
            attempt["status"] = record["status"] = response.status
            attempt["seconds"] = round(time.time() - began, 3)
            try:
                record["body"] = response.json()
            except ValueError:
                record["body"] = response.body[:200].decode("utf-8", "replace")
            if kind == "room" and response.status == 201:
                record["roomId"] = record["body"]["data"]["id"]
            break
        if kind != "owner":
            record.pop("body", None)
            self.records.append(record)
        return record
