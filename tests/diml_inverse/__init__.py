"""Tests of ``diml_inverse``."""
