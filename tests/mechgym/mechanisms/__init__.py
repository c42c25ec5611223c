"""Tests of ``mechgym.mechanisms``."""
