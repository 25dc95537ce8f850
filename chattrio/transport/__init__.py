"""The transport: the listener (HTTP/1.1 and the WebSocket upgrade on one port), the HTTP
messages, WebSocket framing, sessions with their bounded send buffers, and liveness pings."""
