"""``diffgym zoo ...`` and ``diffgym enjoy`` on a tiny model in a private registry."""

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest

from diffgym.agents.dql import DiffusionQL
from diffgym.cli import main
from diffgym.zoo.catalog import Source, ZooEntry, write_registry
from diffgym.zoo.format import write_model_folder

DQL = dict(
    batch_size=16,
    seed=0,
    ema_start=5,
    policy_kwargs=dict(actor_hidden=16, critic_hidden=16, num_candidates=4),
)
NAME = "dql/pendulum-test"


@pytest.fixture(scope="module")
def registry(pendulum_dataset, tmp_path_factory):
    """A registry with one tiny Diffusion-QL on Pendulum, shipped beside it."""
    folder = tmp_path_factory.mktemp("zoo")
    model = DiffusionQL("MlpPolicy", gym.make("Pendulum-v1"), dataset=pendulum_dataset, **DQL).learn(10)
    files = write_model_folder(
        model,
        folder / "models" / "dql" / "pendulum-test",
        name=NAME,
        env={"id": "Pendulum-v1", "kwargs": {}},
        dataset={"id": pendulum_dataset.id},
        training={"gradient_steps": 10, "seed": 0},
        results={
            "final": {"returns": [-1300.0, -1100.0], "mean_return": -1200.0, "score": None},
            "evaluation": {"seed": 0},
        },
    )
    summary = {"score": None, "mean_return": -1200.0, "std_return": 100.0, "gradient_steps": 10}
    entry = ZooEntry(
        NAME,
        "dql",
        "Pendulum-v1",
        "pendulum-test",
        files,
        (Source("package", "models/dql/pendulum-test"),),
        summary=summary,
    )
    return write_registry({NAME: entry}, folder / "registry.json")


def test_list_shows_every_model_with_its_return_and_where_it_is(registry, capsys):
    assert main(["zoo", "list", "--registry", str(registry)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "env", "score", "metric", "return", "steps", "files"]
    assert out[1].split() == [
        NAME,
        "Pendulum-v1",
        "-",
        "normalised_score",
        "-1200.0",
        "±",
        "100.0",
        "10",
        "shipped",
    ]


def test_info_prints_the_entry_and_the_card(registry, capsys):
    assert main(["zoo", "info", NAME, "--registry", str(registry)]) == 0
    out = capsys.readouterr().out
    assert (
        '"available": "shipped"' in out and "library_name" in out and "zoo.load('dql/pendulum-test')" in out
    )


def test_an_unknown_model_is_one_line_naming_the_close_ones(registry, capsys):
    assert main(["zoo", "info", "dql/pendulum-tets", "--registry", str(registry)]) == 1
    assert "did you mean: dql/pendulum-test" in capsys.readouterr().err


def test_export_writes_the_folder_to_upload(registry, tmp_path, capsys):
    assert main(["zoo", "export", NAME, str(tmp_path / "up"), "--registry", str(registry)]) == 0
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == [
        "README.md", "config.json", "model.safetensors", "results.json"
    ]  # fmt: skip


@pytest.fixture
def gl_environment(monkeypatch):
    """enjoy --video sets MUJOCO_GL / PYOPENGL_PLATFORM on a headless machine: undone after the test."""
    for name in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.setenv(name, "unset-by-test")
        monkeypatch.delenv(name)


def test_enjoy_writes_a_playable_video_of_the_episodes(registry, tmp_path, capsys, gl_environment):
    video = tmp_path / "pendulum.mp4"
    assert main(["enjoy", NAME, "--episodes", "1", "--video", str(video), "--registry", str(registry)]) == 0
    out = capsys.readouterr().out
    assert "episode 0: return" in out and "in 200 steps" in out and f"wrote {video}" in out
    frames = np.stack(imageio.mimread(video, format="ffmpeg", memtest=False))  # decoded again by ffmpeg
    assert frames.shape[0] == 202 and frames.shape[-1] == 3  # each reset's frame (two) and one per step
    assert np.ptp(frames[:, :, :, 0]) > 0  # not blank


def test_enjoy_replays_the_same_episodes_for_the_same_seed(registry, capsys):
    for _ in range(2):
        assert main(["enjoy", NAME, "--episodes", "2", "--seed", "3", "--registry", str(registry)]) == 0
    first, second = (block for block in capsys.readouterr().out.split(f"{NAME}: mean return")[:2])
    assert first.strip().splitlines()[-2:] == second.strip().splitlines()[-2:]


@pytest.fixture(scope="module")
def team_registry(minari_store, tmp_path_factory):
    """A registry with one tiny MADiff on a 2-agent MPE spread, shipped beside it."""
    from mpe2 import simple_spread_v3

    from diffgym.agents.madiff import MADiff
    from diffgym.data import collect_multiagent_dataset

    kwargs = dict(N=2, max_cycles=10, continuous_actions=True)
    env = simple_spread_v3.parallel_env(**kwargs)
    data = collect_multiagent_dataset(env, None, "test/zoo-spread/random-v0", n_episodes=4, seed=0)
    tiny = dict(horizon=4, num_timesteps=5, dim=8, dim_mults=(1, 2), inverse_hidden=16, sampler="ddpm")
    model = MADiff(
        "MlpPolicy", env, dataset=data, batch_size=16, seed=0, ema_start=5, policy_kwargs=tiny
    ).learn(5)
    folder = tmp_path_factory.mktemp("team-zoo")
    files = write_model_folder(
        model,
        folder / "models" / "madiff" / "spread",
        name="madiff/spread",
        env={"id": "mpe2.simple_spread_v3", "kwargs": kwargs},
        dataset={"id": data.id},
        training={"gradient_steps": 5, "seed": 0},
        results={
            "final": {"returns": [-10.0], "mean_return": -10.0, "score": None},
            "evaluation": {"seed": 0},
        },
    )
    entry = ZooEntry(
        "madiff/spread", "madiff", "mpe2.simple_spread_v3", "spread", files,
        (Source("package", "models/madiff/spread"),), env_kwargs=kwargs,
    )  # fmt: skip
    return write_registry({"madiff/spread": entry}, folder / "registry.json")


def test_enjoy_plays_a_team_and_writes_its_video(team_registry, tmp_path, capsys, gl_environment):
    video = tmp_path / "team.gif"
    argv = [
        "enjoy",
        "madiff/spread",
        "--episodes",
        "2",
        "--video",
        str(video),
        "--registry",
        str(team_registry),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "episode 1: return" in out and "in 10 steps" in out
    frames = imageio.mimread(video, memtest=False)
    # a frame at each reset and step (2 x 11); GIF merges a frame identical to the one before it
    assert 2 * 10 <= len(frames) <= 2 * 11 and frames[0].shape == (700, 700, 3)


def test_benchmark_zoo_finds_no_model_of_another_suite(capsys, monkeypatch, registry):
    monkeypatch.setenv("DIFFGYM_ZOO_REGISTRY", str(registry))
    assert main(["benchmark", "d4rl", "--zoo"]) == 0  # the tiny model names no suite
    assert "no zoo model of the d4rl suite matches" in capsys.readouterr().out


def test_enjoy_draws_a_maze_planners_plans(minari_store, tmp_path, capsys):
    from diffgym.agents.diffuser import DiffuserPlanner
    from diffgym.data import collect_dataset
    from diffgym.tasks.mazes import make_maze_eval_env, maze_eval_env_spec

    env = make_maze_eval_env("umaze")
    data = collect_dataset(env, None, "test/zoo-maze/random-v0", n_steps=200, seed=0)
    tiny = dict(
        horizon=8, num_timesteps=5, dim=8, dim_mults=(1, 2), value_dim=8, value_dim_mults=(1, 2), n_plans=2
    )
    model = DiffuserPlanner(
        "MultiInputPolicy", env, dataset=data, batch_size=8, seed=0, policy_kwargs=tiny
    ).learn(3)
    env_id, kwargs = maze_eval_env_spec("umaze")
    files = write_model_folder(
        model,
        tmp_path / "models" / "diffuser" / "umaze",
        name="diffuser/umaze",
        env={"id": env_id, "kwargs": kwargs},
        dataset={"id": data.id},
        training={"gradient_steps": 3, "seed": 0},
        results={"final": {"returns": [0.0], "mean_return": 0.0, "score": None}, "evaluation": {"seed": 0}},
    )
    entry = ZooEntry(
        "diffuser/umaze",
        "diffuser",
        env_id,
        "umaze",
        files,
        (Source("package", "models/diffuser/umaze"),),
        kwargs,
    )
    registry = write_registry({"diffuser/umaze": entry}, tmp_path / "registry.json")
    plans = tmp_path / "plans.png"
    argv = ["enjoy", "diffuser/umaze", "--episodes", "1", "--plans", str(plans), "--registry", str(registry)]
    assert main(argv) == 0
    assert f"wrote {plans}" in capsys.readouterr().out
    assert imageio.imread(plans).shape[-1] in (3, 4)
