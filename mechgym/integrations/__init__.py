"""Adapters to other libraries, one subpackage each, imported only when used.

``import mechgym`` imports none of them, so the core works without their libraries installed;
:mod:`mechgym.integrations.sb3` (``pip install '.[sb3]'``) trains Stable-Baselines3 agents on mechgym games.
"""
