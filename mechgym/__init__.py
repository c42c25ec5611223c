"""mechgym: repeated games whose payoffs come from a mechanism, played by learning agents.

>>> import mechgym
>>> env = mechgym.make("mechgym/Congestion-v0")               # a PettingZoo ParallelEnv
>>> traces = mechgym.rollout("mechgym/Congestion-v0", n_episodes=48, n_rounds=60, seed=0)
>>> traces.save("traces.parquet"); mechgym.load_traces("traces.parquet")

Importing mechgym registers the built-in games (:mod:`mechgym.envs`) in PettingZoo's and Gymnasium's registries.
"""

__version__ = "0.1.0"

from mechgym import envs
from mechgym.devices import device_of
from mechgym.env import MechanismGameEnv
from mechgym.errors import (
    ConfigurationError,
    InvalidActionError,
    MechGymError,
    TraceDatasetError,
    TraceFileError,
    UnknownEnvironmentError,
)
from mechgym.interop import from_nfg, from_openspiel, to_nfg
from mechgym.learners import BanditQ, Hedge, Learner, LearnerPolicy, LogitQ, SmoothFP
from mechgym.loop import play_episodes
from mechgym.registration import make, pprint_registry, register, registered_ids, spec
from mechgym.rollout import rollout, simulate
from mechgym.single_agent import SingleAgentView
from mechgym.traces import RecordTraces, TraceDataset, TraceMetadata, load_traces

__all__ = [
    "BanditQ",
    "ConfigurationError",
    "Hedge",
    "InvalidActionError",
    "Learner",
    "LearnerPolicy",
    "LogitQ",
    "MechGymError",
    "MechanismGameEnv",
    "RecordTraces",
    "SingleAgentView",
    "SmoothFP",
    "TraceDataset",
    "TraceDatasetError",
    "TraceFileError",
    "TraceMetadata",
    "UnknownEnvironmentError",
    "__version__",
    "device_of",
    "from_nfg",
    "from_openspiel",
    "load_traces",
    "make",
    "play_episodes",
    "pprint_registry",
    "register",
    "registered_ids",
    "rollout",
    "simulate",
    "spec",
    "to_nfg",
]

# The built-in games (the data of mechgym.envs), registered once, here.
envs.register_builtins()
