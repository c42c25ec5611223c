"""Tests of ``diml_inverse.dynamics``."""
