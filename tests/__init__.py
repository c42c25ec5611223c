"""The test suite. ``tests/mechgym/...`` and ``tests/diml_inverse/...`` mirror the modules they test; the files at
this level test the repository as a whole (docs, examples, benchmarks, CI, layout) or what spans packages and
every registered game (conformance, ecosystem, both command lines, file integrity).

The ``__init__.py`` files make each folder a package, so that test files of the same name in different folders
(``tests/mechgym/test_cli.py``, ``tests/diml_inverse/test_cli.py``) import under distinct module names.
"""
