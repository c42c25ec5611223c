"""Tests of ``mechgym.traces``."""
