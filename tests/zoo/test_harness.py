"""The benchmark harness on a tiny matrix: 2 registered agents × 1 tiny dataset × 2 seeds."""

import json

import pytest

from diffgym.registry import AgentSpec
from diffgym.scores import register_reference
from diffgym.zoo.benchmarks import SUITES, load_suite
from diffgym.zoo.benchmarks.harness import Budget, Contender, Session, Suite, run_suite
from diffgym.zoo.benchmarks.reporting import RECORD_FORMAT
from diffgym.zoo.hyperparameters import hyperparams_file

REFERENCE = "diffgym-test-pendulum-tiny"  # random = -1500, expert = -150
#: small networks and batches, for every agent and for Diffusion-QL alone
SMALL = ("batch_size=16", "dql:policy_kwargs.num_candidates=2", "dql:policy_kwargs.actor_hidden=16",
         "dql:policy_kwargs.critic_hidden=16")  # fmt: skip
RUNS = ["dql_pendulum-tiny_s0", "dql_pendulum-tiny_s1", "td3bc_pendulum-tiny_s0", "td3bc_pendulum-tiny_s1"]


@pytest.fixture(scope="module")
def suite():
    register_reference(REFERENCE, -1500.0, -150.0, "test references")
    return Suite(
        name="tiny",
        title="Tiny benchmark",
        description="Two agents on random Pendulum data.",
        datasets=("pendulum-tiny",),
        agents=("td3bc", Contender("dql", title="Diffusion-QL")),
        budget=Budget(seeds=2, steps=4, eval_every=2, eval_episodes=1, final_episodes=1),
        reference=lambda dataset: REFERENCE,
    )


@pytest.fixture(scope="module")
def results(suite, pendulum_file, tmp_path_factory):
    """The matrix run once: ``(session, report path)``."""
    out = tmp_path_factory.mktemp("results")
    session = Session(suite, data_dir=pendulum_file.parent, out=out, budget=suite.budget, overrides=SMALL)
    return session, run_suite(session)


def test_one_valid_record_per_run(results):
    session, _ = results
    paths = sorted(session.folder.glob("*.json"))
    assert [path.stem for path in paths] == RUNS
    for path in paths:
        record = json.loads(path.read_text())
        assert record["format"] == RECORD_FORMAT and record["run"] == path.stem
        assert record["config"]["hyperparams"]["key"] == "default"
        assert record["budget"] | {"gradient_steps": 4, "seeds": 2, "eval_every": 2} == record["budget"]
        assert [point["step"] for point in record["curve"]] == [2, 4]
        final = record["final"]
        assert final["step"] == 4 and len(final["returns"]) == 1
        assert final["score"] == pytest.approx(100 * (final["mean_return"] + 1500) / 1350)
        assert record["best"]["score"] == max(p["score"] for p in [*record["curve"], final])
        assert record["data"]["env_id"] == "Pendulum-v1" and record["hardware"]["cores"] >= 1
        assert record["latency"]["predict_ms"] > 0 and record["gradient_steps_per_second"] > 0
        assert set(record["wall_time"]) == {"build_seconds", "train_seconds", "eval_seconds", "total_seconds"}


def test_overrides_reach_the_agents_they_name(results):
    session, _ = results
    dql, td3bc = (json.loads((session.folder / f"{run}.json").read_text()) for run in (RUNS[0], RUNS[2]))
    assert dql["config"]["hyperparams"]["values"]["policy_kwargs"]["num_candidates"] == 2
    assert td3bc["config"]["hyperparams"]["values"]["batch_size"] == 16
    assert "policy_kwargs" not in td3bc["config"]["hyperparams"]["values"]


def test_markdown_report_from_the_records(results):
    session, path = results
    markdown = path.read_text()
    assert path == session.out / "tiny.md" and markdown.startswith("# Tiny benchmark")
    assert (
        "| pendulum-tiny | TD3BC (baseline) |" in markdown and "| pendulum-tiny | Diffusion-QL |" in markdown
    )
    assert "| 2 | 4 |" in markdown  # seeds, gradient steps
    assert "Budget: 4 gradient steps per run, up to 2 seed(s); evaluated every 2 gradient steps" in markdown
    assert "Hardware: " in markdown
    written = json.loads((session.out / "tiny.json").read_text())
    assert len(written["runs"]) == 4 and [len(names) for names in written["machines"].values()] == [4]


def test_records_from_several_machines_name_each_machine_with_its_records():
    from diffgym.zoo.benchmarks.reporting import hardware_text

    one = hardware_text({"AMD EPYC, 2 cores": ["dql x s0", "dql x s1"]})
    assert one == "Hardware: AMD EPYC, 2 cores."
    two = hardware_text(
        {"Intel Xeon": ["bc x s0"], "AMD EPYC": ["dql x s0", "dql x s1"], "Arm": ["study expert"]}
    )
    assert two.startswith("Hardware: these records come from 3 machines") and "AMD EPYC (2 records)" in two
    assert "Intel Xeon (bc x s0); Arm (study expert)." in two
    assert hardware_text({}) == ""
    assert "A (1 record); B (b s0)" in hardware_text({"A": ["a s0"], "B": ["b s0"]})


def test_a_learning_curve_figure_per_dataset_linked_from_the_report(results):
    session, path = results
    figure = session.out / "tiny_curves" / "pendulum-tiny.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert "Learning curves (mean ± std over seeds; dot: the final evaluation): " in path.read_text()
    assert "[pendulum-tiny](tiny_curves/pendulum-tiny.png)" in path.read_text()


def test_report_only_ignores_records_of_another_layout(results):
    session, path = results
    (session.folder / "old_run.json").write_text(json.dumps({"agent": "dql", "score": 1.0}))
    (session.folder / "latency.json").write_text(json.dumps([{"agent": "dql"}]))  # not even a record
    path.unlink()
    assert run_suite(session, report_only=True) == path
    assert len(json.loads((session.out / "tiny.json").read_text())["runs"]) == 4


def test_sessions_split_by_dataset_keep_each_others_dataset_studies(pendulum_file, tmp_path):
    """A per-dataset study is merged into its file: a later session on another dataset (or a rerun of
    one) adds or replaces its own entry and keeps the rest."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("pendulum-a", "pendulum-b"):
        (data / f"{name}.hdf5").write_bytes(pendulum_file.read_bytes())
    calls = []

    def transitions(session, dataset):
        calls.append(dataset.name)
        return None if dataset.name == "pendulum-b" and len(calls) > 2 else {"calls": len(calls)}

    suite = Suite(name="split", title="Split", description="Studies only.", datasets=("pendulum-a", "pendulum-b"),
                  dataset_studies={"count": transitions})  # fmt: skip
    session = Session(suite, data_dir=data, out=tmp_path / "out", budget=Budget())
    path = session.folder / "studies" / "count.json"
    for datasets in (["pendulum-a"], ["pendulum-b"], ["pendulum-a"], ["pendulum-b"]):
        run_suite(session, datasets=datasets)
    record = json.loads(path.read_text())
    assert calls == ["pendulum-a", "pendulum-b", "pendulum-a", "pendulum-b"]
    assert record["result"] == {"pendulum-a": {"calls": 3}, "pendulum-b": {"calls": 2}}  # None: kept
    assert set(record["seconds"]) == {"pendulum-a", "pendulum-b"} and record["format"] == RECORD_FORMAT


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ({"agents": ["nope"]}, "suite 'tiny' has no agent 'nope'; its agents: td3bc, dql"),
        ({"datasets": ["nope"]}, r"suite 'tiny' has no dataset \['nope'\]"),
    ],
)
def test_unknown_agents_and_datasets_are_refused(suite, tmp_path, choice, message):
    session = Session(suite, data_dir=tmp_path, out=tmp_path, budget=suite.budget)
    with pytest.raises(KeyError, match=message):
        run_suite(session, **choice)


@pytest.mark.parametrize(
    ("override", "message"),
    [("nope:eta=1", r"--set targets \['nope'\]"), ("suite:nope=1", "suite 'tiny' has no setting 'nope'")],
)
def test_unknown_override_targets_are_refused(suite, tmp_path, override, message):
    session = Session(suite, data_dir=tmp_path, out=tmp_path, budget=suite.budget, overrides=(override,))
    with pytest.raises(KeyError, match=message):
        run_suite(session)


def test_missing_data_names_the_option(suite, tmp_path):
    session = Session(suite, data_dir=tmp_path, out=tmp_path, budget=suite.budget)
    with pytest.raises(FileNotFoundError, match="give --data-dir"):
        run_suite(session)


@pytest.mark.parametrize("name", SUITES)
def test_every_suite_names_registered_agents_with_hyperparameters(name):
    suite = load_suite(name)
    assert suite.name == name
    for contender in suite.contenders:
        assert all(dataset in suite.datasets for dataset in contender.datasets)
        if not isinstance(contender.agent, AgentSpec):  # a registered agent, not one the suite defines
            assert hyperparams_file(contender.stem).exists(), contender


def test_scratch_folders_of_sessions_that_were_killed_are_removed(tmp_path):
    import fcntl

    from diffgym.zoo.benchmarks.harness import SCRATCH_PREFIX, remove_stale_scratch, scratch_space

    stale, alive, other = (tmp_path / f"{SCRATCH_PREFIX}{name}" for name in ("gone", "running", "older"))
    for folder in (stale, alive, other):
        (folder / "minari").mkdir(parents=True)
    (stale / ".alive").touch()  # its session died: nobody holds the lock
    (alive / ".alive").touch()
    with open(alive / ".alive", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a running session, whatever its process id
        assert remove_stale_scratch(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])
    with scratch_space() as folder:  # a session's own folder is held while it runs
        assert (folder / ".alive").is_file() and folder not in remove_stale_scratch(folder.parent)
    assert not folder.exists()
