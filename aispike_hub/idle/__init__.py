"""Idle resources: which servers compute, which only hold a GPU, and what to do about it."""
