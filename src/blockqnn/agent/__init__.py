"""Search strategies behind one ask/tell interface: the paper's Q-learning agent and the
random, evolution and TPE baselines."""

from blockqnn.agent.base import Agent
from blockqnn.agent.baselines import EvolutionAgent, RandomAgent, ReplayAgent, TPEAgent
from blockqnn.agent.qlearning import QLearningAgent
from blockqnn.agent.schedules import EpsilonSchedule, parse_schedule

#: Registry of named agents (``agent=<name>``).
AGENTS: dict[str, type[Agent]] = {
    "qlearning": QLearningAgent,
    "random": RandomAgent,
    "evolution": EvolutionAgent,
    "tpe": TPEAgent,
}

__all__ = [
    "AGENTS",
    "Agent",
    "QLearningAgent",
    "RandomAgent",
    "EvolutionAgent",
    "TPEAgent",
    "ReplayAgent",
    "EpsilonSchedule",
    "parse_schedule",
]
