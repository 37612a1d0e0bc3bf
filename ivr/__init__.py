"""Inbound calls: FastAGI and classic AGI entry, call sessions, the flow engine."""
