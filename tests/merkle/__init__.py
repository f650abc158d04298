"""Tests of ``ledger.merkle`` (a package so its module names never clash with other folders)."""
