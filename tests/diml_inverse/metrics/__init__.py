"""Tests of ``diml_inverse.metrics``."""
