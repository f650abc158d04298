"""Tests of the ``ledger`` command line (a package so its module names never clash)."""
