"""Tests of ``mechgym.integrations``."""
