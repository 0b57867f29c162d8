"""Multi-agent offline data: a team of agents stored as one Minari dataset of the joint agent.

The format is described in :mod:`diffgym.data.team.format`. The modules, in dependency order:

- :mod:`~diffgym.data.team.format`: the format's definitions (team reward and flags, metadata);
- :mod:`~diffgym.data.team.stepping`: a PettingZoo ``ParallelEnv`` stepped as one joint agent;
- :mod:`~diffgym.data.team.envs`: the ``ParallelEnv`` from an importable name or a dataset's record;
- :mod:`~diffgym.data.team.collection`: rolling out a team into a new dataset;
- :mod:`~diffgym.data.team.d4rl`: importing D4RL-layout files with an agent axis (and registering that
  importer with :mod:`diffgym.data.d4rl`);
- :mod:`~diffgym.data.team.checks`, :mod:`~diffgym.data.team.reading`,
  :mod:`~diffgym.data.team.segments`: checking and reading a dataset with an agent axis.
"""

from diffgym.data.team.checks import check_agents_and_spaces, dataset_agents
from diffgym.data.team.collection import collect_multiagent_dataset
from diffgym.data.team.d4rl import import_multiagent_d4rl
from diffgym.data.team.envs import make_parallel_env, recover_parallel_env
from diffgym.data.team.format import (
    AGENT_INFO_KEYS,
    FORMAT_VERSION,
    TEAM_REWARD,
    AgentMismatchError,
    team_flags,
    team_reward,
)
from diffgym.data.team.reading import (
    MultiAgentEpisodes,
    read_multiagent_episodes,
    stack_agents,
    unstack_agents,
    validate_multiagent_dataset,
)
from diffgym.data.team.segments import MultiAgentSegmentDataset, MultiAgentSegments
from diffgym.data.team.stepping import JointStep, JointStepper

__all__ = [
    "AGENT_INFO_KEYS",
    "FORMAT_VERSION",
    "TEAM_REWARD",
    "AgentMismatchError",
    "JointStep",
    "JointStepper",
    "MultiAgentEpisodes",
    "MultiAgentSegmentDataset",
    "MultiAgentSegments",
    "check_agents_and_spaces",
    "collect_multiagent_dataset",
    "dataset_agents",
    "import_multiagent_d4rl",
    "make_parallel_env",
    "read_multiagent_episodes",
    "recover_parallel_env",
    "stack_agents",
    "team_flags",
    "team_reward",
    "unstack_agents",
    "validate_multiagent_dataset",
]
