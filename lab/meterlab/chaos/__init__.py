"""Faults and invariants: a model-checked workload against real servers (`meter chaos`)."""
