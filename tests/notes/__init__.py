"""Tests of the formats: keys, signed notes, checkpoints, policies, receipts, proving ground."""
