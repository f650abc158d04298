"""Tests of ledger.client against a local aiohttp server (a package so names never clash)."""
