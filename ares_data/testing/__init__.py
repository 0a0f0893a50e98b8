"""Test and benchmark helpers: fake servers and synthetic datasets (no network, no API keys)."""
