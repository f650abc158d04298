"""Tests of ``ledger.storage`` (a package so its module names never clash with other folders)."""
