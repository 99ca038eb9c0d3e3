"""The REST door: one HTTP port (``rest_port``) beside gRPC, on the same event loop (aiohttp)."""
