"""The status page and admin API (aiohttp)."""
