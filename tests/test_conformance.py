"""Every registered game passes PettingZoo's four conformance checks (parallel and AEC, API and seeding).

A toy third-party game (tests/toy_game.py, registered for the session by tests/conftest.py) is among them, so the
parametrisation shows that games registered through :func:`mechgym.registration.register` are picked up like the
built-in ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
from pettingzoo.test import api_test as check_api
from pettingzoo.test import parallel_api_test as check_parallel_api
from pettingzoo.test import parallel_seed_test as check_parallel_seed
from pettingzoo.test import seed_test as check_seed
from pettingzoo.utils.conversions import parallel_to_aec

from mechgym import registration
from mechgym.env import MechanismGameEnv
from tests.toy_game import TOY_ID

#: Warnings the checks raise by design: nothing has been played in round 0, so observations are zeros.
EXPECTED_WARNINGS = ("Observation numpy array is all zeros",)


def small_env_factory(env_id: str, n_rounds: int = 4) -> Callable[[], MechanismGameEnv]:
    """Build ``env_id`` with a short horizon when its entry point takes ``n_rounds``."""
    kwargs = {"n_rounds": n_rounds} if "n_rounds" in registration.spec(env_id).kwargs else {}
    return lambda: registration.make(env_id, **kwargs)


def test_toy_game_is_registered() -> None:
    assert TOY_ID in registration.registered_ids()
    assert registration.make(TOY_ID).mechanism.family == "test_minority"


@pytest.mark.parametrize("env_id", registration.registered_ids())
def test_pettingzoo_conformance(env_id: str) -> None:
    make_env = small_env_factory(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_parallel_api(make_env(), num_cycles=10)
        check_parallel_seed(make_env)
        check_api(parallel_to_aec(make_env()))
        check_seed(lambda: parallel_to_aec(make_env()))
    unexpected = sorted(
        {str(w.message) for w in caught if not any(text in str(w.message) for text in EXPECTED_WARNINGS)}
    )
    assert unexpected == []
