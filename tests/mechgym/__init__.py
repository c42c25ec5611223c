"""Tests of ``mechgym``."""
