"""Optimizers and learning-rate schedules for part_d2 models."""
