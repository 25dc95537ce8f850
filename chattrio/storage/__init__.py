"""The only package that talks to PostgreSQL, Redis and Kafka (and the only one importing drivers).

asyncpg and aiokafka are asyncio libraries; they run on an asyncio loop of their own thread, reached
through `bridge.py` alone. Every public coroutine here is a Trio coroutine that crosses the bridge once per
call, so callers batch: one crossing per batch of chat messages, never one per message.
"""
