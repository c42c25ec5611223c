"""Learning rules that play mechgym games: vectorised populations and per-agent policies.

Stable-Baselines3 agents are an integration, :mod:`mechgym.integrations.sb3` (``pip install '.[sb3]'``): this
package imports neither SB3 nor the environment.
"""

from mechgym.learners.bandit_q import BanditQ, bandit_q_update
from mechgym.learners.base import LEARNERS, Learner, learner_from_dict, register_learner
from mechgym.learners.hedge import Hedge, hedge_update
from mechgym.learners.logit_q import LogitQ, explore_log_policy, logit_log_policy, logit_policy, logit_q_update
from mechgym.learners.policy import LearnerPolicy
from mechgym.learners.smooth_fp import SmoothFP, smooth_fp_belief, smooth_fp_update

__all__ = [
    "LEARNERS",
    "BanditQ",
    "Hedge",
    "Learner",
    "LearnerPolicy",
    "LogitQ",
    "SmoothFP",
    "bandit_q_update",
    "explore_log_policy",
    "hedge_update",
    "learner_from_dict",
    "logit_log_policy",
    "logit_policy",
    "logit_q_update",
    "register_learner",
    "smooth_fp_belief",
    "smooth_fp_update",
]
