"""Tests of ``mechgym.envs``."""
