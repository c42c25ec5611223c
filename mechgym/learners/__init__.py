"""Learning rules that play mechgym games: vectorised populations and per-agent policies."""

from mechgym.learners.base import LEARNERS, Learner, learner_from_dict, register_learner
from mechgym.learners.logit_q import LogitQ, logit_log_policy, logit_policy, logit_q_update
from mechgym.learners.policy import LearnerPolicy

__all__ = [
    "LEARNERS",
    "Learner",
    "LearnerPolicy",
    "LogitQ",
    "learner_from_dict",
    "logit_log_policy",
    "logit_policy",
    "logit_q_update",
    "register_learner",
]
