"""Tests of ``diml_inverse.experiments``."""
