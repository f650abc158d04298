"""Tests of ledger.config: genesis, trust policy, node config (a package so names never clash)."""
