"""Hyperparameter search (``diffgym benchmark --tune``): trials are harness runs with the trial's
settings, read back when done, ranked in a report; on Ray Tune they give the in-process records."""

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from diffgym.zoo.benchmarks.harness import Budget, Contender, Session, Suite
from diffgym.zoo.benchmarks.search import Dimension, run_search


@pytest.fixture(scope="module")
def suite():
    return Suite(
        name="tiny",
        title="Tiny",
        description="TD3+BC on random Pendulum data.",
        datasets=("pendulum-tiny",),
        agents=("td3bc", "iql"),
        budget=Budget(seeds=2, steps=3, final_episodes=1),
        reference=lambda dataset: None,  # unscored: the objective is the mean return
    )


def session(suite, pendulum_file, out, ray_address=None):
    return Session(
        suite, data_dir=pendulum_file.parent, out=out, budget=suite.budget, overrides=("batch_size=16",),
        ray_address=ray_address,
    )  # fmt: skip


GRID = [Dimension.parse("learning_rate=choice(1e-3, 3e-4)"), Dimension.parse("tau=choice(0.005)")]


def search_report(path):
    return json.loads(path.with_name("search.json").read_text())


def trial_records(folder, trial):
    return {
        p.stem: json.loads(p.read_text()) for p in sorted((folder / "trials" / trial / "tiny").glob("*.json"))
    }


def outcome(record):
    return [(p["step"], p["returns"]) for p in [*record["curve"], record["final"]]]


@pytest.fixture(scope="module")
def grid_search(suite, pendulum_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    return out, run_search(session(suite, pendulum_file, out), "td3bc", GRID, searcher="grid")


def test_a_grid_runs_every_combination_with_its_settings(grid_search):
    _, path = grid_search
    report = search_report(path)
    assert sorted(t["assignments"][0] for t in report["trials"]) == [
        "learning_rate=0.0003",
        "learning_rate=0.001",
    ]
    for trial in report["trials"]:
        records = trial_records(path.parent, trial["id"])
        assert sorted(records) == ["td3bc_pendulum-tiny_s0", "td3bc_pendulum-tiny_s1"]
        rate = float(trial["assignments"][0].partition("=")[2])
        for record in records.values():
            values = record["config"]["hyperparams"]["values"]
            assert (values["learning_rate"], values["tau"], values["batch_size"]) == (rate, 0.005, 16)
        finals = [record["final"]["mean_return"] for record in records.values()]
        assert trial["objective_key"] == "mean_return"
        assert trial["objective"] == pytest.approx(sum(finals) / 2)
    assert report["trials"][0]["objective"] >= report["trials"][1]["objective"]


def test_the_report_ranks_trials_and_names_the_best_settings(grid_search):
    _, path = grid_search
    text, best = path.read_text(), search_report(path)["trials"][0]
    assert "| rank | trial | learning_rate | tau | objective (mean ± std over runs) | pendulum-tiny |" in text
    assert f"| 1 | `{best['id']}` |" in text
    assert f"Best: `--set td3bc:{best['assignments'][0]} td3bc:tau=0.005`" in text
    assert "optimistic" in text


def test_the_same_search_again_reads_finished_trials_back(grid_search, suite, pendulum_file, capsys):
    out, path = grid_search
    before = {t["id"]: trial_records(path.parent, t["id"]) for t in search_report(path)["trials"]}
    run_search(session(suite, pendulum_file, out), "td3bc", GRID, searcher="grid")
    assert "skipped" in capsys.readouterr().out
    after = {t["id"]: trial_records(path.parent, t["id"]) for t in search_report(path)["trials"]}
    assert after == before  # no run was trained again (dates and wall times unchanged)


def test_optuna_proposes_values_in_the_space_the_same_way_each_time(suite, pendulum_file, tmp_path):
    pytest.importorskip("optuna")
    one_seed = dataclasses.replace(suite, budget=dataclasses.replace(suite.budget, seeds=1))
    space = [
        Dimension.parse("learning_rate=loguniform(1e-4, 1e-2)"),
        Dimension.parse("policy_delay=int(1, 3)"),
    ]
    first = search_report(
        run_search(session(one_seed, pendulum_file, tmp_path / "1"), "td3bc", space, trials=3)
    )
    assert len(first["trials"]) == 3
    for trial in first["trials"]:
        rate, frequency = (float(a.partition("=")[2]) for a in trial["assignments"])
        assert 1e-4 <= rate <= 1e-2 and frequency in (1, 2, 3)
    again = search_report(
        run_search(session(one_seed, pendulum_file, tmp_path / "2"), "td3bc", space, trials=3)
    )
    assert sorted(t["assignments"] for t in again["trials"]) == sorted(
        t["assignments"] for t in first["trials"]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate", "KEY=SPACE"),
        ("learning_rate=normal(0, 1)", "KEY=SPACE"),
        ("learning_rate=uniform(1e-3)", "two numbers"),
        ("learning_rate=uniform(1e-3, 1e-4)", "LOW < HIGH"),
        ("learning_rate=loguniform(0, 1)", "LOW > 0"),
        ("batch_size=int(16, 64.5)", "integers"),
        ("sampler=choice()", "at least one value"),
        ("sampler=choice({name: ddim)", "not valid YAML"),
    ],
)
def test_bad_spaces_are_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        Dimension.parse(text)


@pytest.mark.parametrize(
    ("space", "searcher", "agent", "error", "message"),
    [
        (GRID, "random", "td3bc", ValueError, "no searcher 'random'"),
        ([Dimension.parse("tau=uniform(0.001, 0.01)")], "grid", "td3bc", ValueError, "ranges: tau"),
        ([*GRID, GRID[0]], "grid", "td3bc", ValueError, "repeated"),
        ([], "grid", "td3bc", ValueError, "at least one"),
        (GRID, "grid", "dql", KeyError, "has no agent 'dql'"),
    ],
)
def test_bad_searches_are_refused_before_anything_runs(
    suite, pendulum_file, tmp_path, space, searcher, agent, error, message
):
    with pytest.raises(error, match=message):
        run_search(session(suite, pendulum_file, tmp_path), agent, space, searcher=searcher)
    assert not (tmp_path / "tiny-search").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tune", "tau=choice(0.005)"], "give --agents NAME"),
        (["--agents", "td3bc", "--tune", "tau=choice(0.005)", "--zoo"], "not --report/--zoo"),
        (["--agents", "td3bc", "--trials", "3"], "give --tune KEY=SPACE"),
        (["--agents", "td3bc", "--searcher", "grid"], "give --tune KEY=SPACE"),
    ],
)
def test_the_command_line_searches_one_agent_and_nothing_else(pendulum_file, capsys, options, message):
    from diffgym.cli import main

    assert main(["benchmark", "d4rl", *options, "--data-dir", str(pendulum_file.parent)]) == 1
    assert message in capsys.readouterr().err


def test_values_proposed_again_are_one_trial(suite, pendulum_file, tmp_path):
    pytest.importorskip("optuna")
    one_seed = dataclasses.replace(suite, budget=dataclasses.replace(suite.budget, seeds=1))
    path = run_search(session(one_seed, pendulum_file, tmp_path), "td3bc", GRID[1:], trials=3)
    assert [t["assignments"] for t in search_report(path)["trials"]] == [["tau=0.005"]]
    assert path.read_text().count("| `") == 1 and "1 trials" in path.read_text()


def test_a_suite_without_a_final_evaluation_or_data_for_the_agent_is_refused(suite, pendulum_file, tmp_path):
    measured_only = dataclasses.replace(suite, procedure=lambda model, run: {})
    with pytest.raises(ValueError, match="without a final evaluation"):
        run_search(session(measured_only, pendulum_file, tmp_path), "td3bc", GRID, searcher="grid")
    elsewhere = dataclasses.replace(suite, agents=(Contender("td3bc", datasets=("other",)),))
    with pytest.raises(ValueError, match="runs on none of the datasets"):
        run_search(session(elsewhere, pendulum_file, tmp_path), "td3bc", GRID, searcher="grid")


def test_on_ray_tune_the_trials_give_the_in_process_records(
    suite, grid_search, pendulum_file, tmp_path, monkeypatch
):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    from diffgym.zoo.benchmarks.ray_runs import LOCAL

    monkeypatch.chdir(tmp_path)  # a relative --out, as the command's default: Ray Tune changes folders
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        path = run_search(session(suite, pendulum_file, Path("out"), LOCAL), "td3bc", GRID, searcher="grid")
    finally:
        ray.shutdown()
    _, here = grid_search
    on_ray = {t["id"]: t for t in search_report(path)["trials"]}
    in_process = {t["id"]: t for t in search_report(here)["trials"]}
    assert sorted(on_ray) == sorted(in_process)
    for trial, summary in in_process.items():
        assert on_ray[trial]["objective"] == summary["objective"]
        ray_records, records = trial_records(path.parent, trial), trial_records(here.parent, trial)
        assert {n: outcome(r) for n, r in ray_records.items()} == {n: outcome(r) for n, r in records.items()}
    assert (path.parent / "ray").is_dir()  # Ray Tune's own logs


def test_optuna_on_ray_tune_proposes_values_in_the_space(suite, pendulum_file, tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    pytest.importorskip("optuna")
    from diffgym.zoo.benchmarks.ray_runs import LOCAL

    one_seed = dataclasses.replace(suite, budget=dataclasses.replace(suite.budget, seeds=1))
    space = [
        Dimension.parse("learning_rate=loguniform(1e-4, 1e-2)"),
        Dimension.parse("policy_delay=int(1, 3)"),
    ]
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        path = run_search(session(one_seed, pendulum_file, tmp_path, LOCAL), "td3bc", space, trials=2)
    finally:
        ray.shutdown()
    trials = search_report(path)["trials"]
    assert 1 <= len(trials) <= 2 and all(len(trial_records(path.parent, t["id"])) == 1 for t in trials)
    for trial in trials:
        rate, delay = (float(a.partition("=")[2]) for a in trial["assignments"])
        assert 1e-4 <= rate <= 1e-2 and delay in (1, 2, 3)
