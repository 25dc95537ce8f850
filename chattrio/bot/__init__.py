"""Load bot: simulated chat users driving chattrio nodes, with delivery and latency accounting.

Entry point: `python -m chattrio bot ...` (chattrio.bot.cli.main); see docs/bot.md.
"""
