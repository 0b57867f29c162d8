"""``diffgym train`` reads ``zoo/hyperparams/ALGO.yml``: the key that fits the data, ``--hyperparams``, ``--set``."""

import pytest

from diffgym.agents.dql import DiffusionQL
from diffgym.cli import main

#: small networks, so that training and one evaluation episode take a second
SMALL = ["policy_kwargs.num_candidates=2", "policy_kwargs.actor_hidden=16", "policy_kwargs.critic_hidden=16"]


@pytest.fixture
def train(hopper_file, minari_store, tmp_path, capsys):
    """``diffgym train dql --env Hopper-v5 --dataset hopper-medium-replay.hdf5 ...`` -> (output, model)."""

    def run(*options):
        argv = ["train", "dql", "--env", "Hopper-v5", "--dataset", str(hopper_file), "--steps", "2"]
        argv += ["--eval-episodes", "1", "--save", str(tmp_path / "dql"), "--no-progress", "--threads", "1"]
        assert main([*argv, "--set", *SMALL, *options]) == 0
        return capsys.readouterr().out, DiffusionQL.load(tmp_path / "dql")

    return run


def test_the_key_that_fits_the_dataset(train):
    out, model = train()
    assert "hyperparameters: zoo/hyperparams/dql.yml, key 'hopper-medium-replay'" in out
    assert (
        '"grad_norm": 4.0' in out and model.grad_norm == 4.0
    )  # Diffusion-QL's clip for hopper-medium-replay
    assert model.policy_kwargs["actor_hidden"] == 16


def test_a_chosen_key_and_overrides(train):
    out, model = train("eta=0.5", "--hyperparams", "default")
    assert "key 'default'" in out and model.grad_norm == 9.0 and model.eta == 0.5


def test_the_model_records_its_hyperparameter_file_key_and_command(train):
    _, model = train("eta=0.5")
    hyperparams = model.provenance["hyperparams"]
    assert hyperparams["file"] == "dql.yml" and hyperparams["key"] == "hopper-medium-replay"
    assert hyperparams["values"]["eta"] == 0.5 and model.provenance["gradient_steps"] == 2
    assert model.provenance["command"].startswith("diffgym train dql --env Hopper-v5 --dataset ")
    assert model.provenance["command"].endswith("--set " + " ".join(SMALL) + " eta=0.5")


def test_a_hyperparameter_the_agent_does_not_take_is_an_error(hopper_file, minari_store, capsys):
    argv = ["train", "dql", "--env", "Hopper-v5", "--dataset", str(hopper_file), "--set", "etaa=0.5"]
    assert main(argv) == 1
    assert "DiffusionQL does not take these hyperparameters" in capsys.readouterr().err


def test_an_unknown_key_is_an_error(hopper_file, minari_store, capsys):
    argv = ["train", "dql", "--env", "Hopper-v5", "--dataset", str(hopper_file), "--hyperparams", "nope"]
    assert main(argv) == 1
    assert "dql.yml has no key 'nope'" in capsys.readouterr().err


def test_auto_threads_take_the_idle_cores_and_say_so(train, monkeypatch):
    monkeypatch.setattr("diffgym.cpu_threads.busy_cores", lambda: 1.2)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    out, _ = train("--threads", "auto")
    assert "torch threads: 1 (the idle cores of 2; --threads N to choose)" in out


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_thread_count_is_refused_by_name(value, capsys):
    with pytest.raises(SystemExit):
        main(["train", "dql", "--env", "Hopper-v5", "--dataset", "x.hdf5", "--threads", value])
    assert f"--threads takes a positive number or 'auto', got {value!r}" in capsys.readouterr().err


def test_busy_cores_falls_back_to_the_load_average_without_proc_stat(monkeypatch):
    from diffgym import cpu_threads

    monkeypatch.setattr(cpu_threads, "_cpu_times", lambda: None)
    monkeypatch.setattr("os.getloadavg", lambda: (1.5, 1.0, 1.0))
    assert cpu_threads.busy_cores(seconds=0.0) == 1.5
    monkeypatch.undo()
    assert 0.0 <= cpu_threads.busy_cores(seconds=0.05) <= (__import__("os").cpu_count() or 1)


@pytest.mark.parametrize(
    ("own", "files", "cores"),
    [
        ("0::/", {"cpu.max": "150000 100000"}, 2),  # v2, the container's own namespace: 1.5 CPUs -> 2
        (
            "0::/a/job",
            {"a/cpu.max": "100000 100000", "a/job/cpu.max": "max 100000"},
            1,
        ),  # an ancestor's limit
        ("0::/", {"cpu.max": "max 100000"}, None),  # no quota: the affinity
        (
            "4:cpu,cpuacct:/docker/x",
            {
                "cpu,cpuacct/docker/x/cpu.cfs_quota_us": "200000",
                "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000",
            },
            2,
        ),  # v1
        (
            "4:cpu,cpuacct:/docker/x",
            {
                "cpu,cpuacct/docker/x/cpu.cfs_quota_us": "-1",
                "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000",
            },
            None,
        ),
        ("0::/", {"cpu.max": "garbage"}, None),  # unreadable: ignored
        (None, {"cpu.max": "300000 100000"}, 3),  # no /proc/self/cgroup: the mount's own files
    ],
)
def test_auto_threads_respect_the_cpu_quota_of_the_process_cgroup(tmp_path, monkeypatch, own, files, cores):
    import os

    from diffgym.cpu_threads import available_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    self_cgroup = tmp_path / "self"
    if own is not None:
        self_cgroup.write_text(own + "\n")
    assert available_cores(str(root), str(self_cgroup)) == (64 if cores is None else cores)


def test_in_a_limited_cgroup_busy_cores_counts_the_cgroups_own_use(monkeypatch):
    from diffgym import cpu_threads

    used = iter([10.0, 10.5])  # CPU seconds of the cgroup before and after
    monkeypatch.setattr(cpu_threads, "cpu_quota", lambda: 2.0)
    monkeypatch.setattr(cpu_threads, "_cgroup_cpu_seconds", lambda: next(used))
    monkeypatch.setattr(cpu_threads, "_cpu_times", lambda: pytest.fail("the host's /proc/stat was read"))
    assert 0.5 / 0.5 <= cpu_threads.busy_cores(seconds=0.25) <= 0.5 / 0.25


@pytest.mark.parametrize(
    ("own", "files", "seconds"),
    [
        ("0::/", {"cpu.stat": "usage_usec 2500000\nuser_usec 2000000\n"}, 2.5),  # v2
        ("3:cpuacct:/job", {"cpuacct/job/cpuacct.usage": "1500000000"}, 1.5),  # v1, in nanoseconds
        ("0::/", {}, None),
    ],
)
def test_the_cpu_time_of_the_process_cgroup_is_read_in_seconds(tmp_path, own, files, seconds):
    from diffgym.cpu_threads import _cgroup_cpu_seconds

    root = tmp_path / "cgroup"
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "self").write_text(own + "\n")
    assert _cgroup_cpu_seconds(str(root), str(tmp_path / "self")) == seconds
