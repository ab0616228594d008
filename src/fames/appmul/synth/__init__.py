"""Approximate logic synthesis of multipliers: a gate network simulated bit-parallel, error metrics on every
operand pair, and two searches that trade gates for error (local approximate changes, Cartesian GP)."""
