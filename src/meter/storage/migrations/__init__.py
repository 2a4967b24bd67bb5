"""Alembic migrations; run by `meter migrate` and at `meter serve` start."""
