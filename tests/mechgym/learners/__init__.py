"""Tests of ``mechgym.learners``."""
