"""The matrix on a local Ray (2 CPUs) gives the records of the in-process run, seed for seed."""

import json
import logging

import pytest

from diffgym.zoo.benchmarks.harness import Budget, Contender, Session, Suite, run_suite
from diffgym.zoo.benchmarks.ray_runs import LOCAL

ray = pytest.importorskip("ray")

SMALL = ("batch_size=16", "dql:policy_kwargs.num_candidates=2", "dql:policy_kwargs.actor_hidden=16",
         "dql:policy_kwargs.critic_hidden=16")  # fmt: skip


@pytest.fixture(scope="module")
def suite():
    return Suite(
        name="tiny",
        title="Tiny",
        description="Two agents on random Pendulum data.",
        datasets=("pendulum-tiny",),
        agents=("td3bc", Contender("dql")),
        budget=Budget(seeds=2, steps=4, eval_every=2, eval_episodes=1, final_episodes=1),
        reference=lambda dataset: None,  # unscored: a reference registered here would not reach the workers
    )


def records(suite, data, out, ray_address=None):
    session = Session(
        suite, data_dir=data, out=out, budget=suite.budget, overrides=SMALL, ray_address=ray_address
    )
    report = run_suite(session)
    runs = {path.stem: json.loads(path.read_text()) for path in sorted(session.folder.glob("*.json"))}
    return runs, report.read_text()


def outcome(record):
    return [(p["step"], p["returns"]) for p in [*record["curve"], record["final"]]]


def test_ray_tasks_give_the_in_process_records(suite, pendulum_file, tmp_path):
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)  # kept: run_on_ray joins it
    try:
        on_ray, report = records(suite, pendulum_file.parent, tmp_path / "ray", LOCAL)
    finally:
        ray.shutdown()
    in_process, _ = records(suite, pendulum_file.parent, tmp_path / "here")
    assert sorted(on_ray) == sorted(in_process) == [
        "dql_pendulum-tiny_s0", "dql_pendulum-tiny_s1", "td3bc_pendulum-tiny_s0", "td3bc_pendulum-tiny_s1"
    ]  # fmt: skip
    for name, record in in_process.items():
        assert outcome(on_ray[name]) == outcome(record), name
        assert on_ray[name]["config"] == record["config"]
    assert "| pendulum-tiny | DiffusionQL |" in report


def test_without_ray_installed_the_error_says_how_to_get_it(suite, pendulum_file, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(ImportError, match=r"--ray needs Ray: pip install 'diffgym\[ray\]'"):
        records(suite, pendulum_file.parent, tmp_path, LOCAL)
