"""Every agent diffgym ships, one entry each (see :mod:`diffgym.registry`).

Adding an agent is its folder under ``agents/`` plus one line here; the facade, the command line,
the conformance test and the benchmarks find it through this list.
"""

from diffgym.registry import AgentSpec

AGENTS = (
    AgentSpec("dql", "diffgym.agents.dql:DiffusionQL", tasks=("offline", "online")),
    AgentSpec("idql", "diffgym.agents.idql:IDQL", tasks=("offline", "online")),
    AgentSpec("diffuser", "diffgym.agents.diffuser:DiffuserPlanner", tasks=("offline", "planning", "goal")),
    AgentSpec(
        "decision_diffuser", "diffgym.agents.diffuser:DecisionDiffuser", tasks=("offline", "planning", "goal")
    ),
    AgentSpec(
        "diffusion_policy", "diffgym.agents.diffusion_policy:DiffusionPolicy", tasks=("offline", "imitation")
    ),
    AgentSpec("madiff", "diffgym.agents.madiff:MADiff", tasks=("offline", "planning", "team")),
    AgentSpec("td3bc", "diffgym.agents.baselines:TD3BC", tasks=("offline", "online"), baseline=True),
    AgentSpec("iql", "diffgym.agents.baselines:IQL", tasks=("offline", "online"), baseline=True),
    AgentSpec("bc", "diffgym.agents.baselines:HistoryBC", tasks=("offline", "imitation"), baseline=True),
    AgentSpec("team_bc", "diffgym.agents.baselines:TeamBC", tasks=("offline", "team"), baseline=True),
)
