"""The speed benchmark's floor (products replayed alone) and its procedure on a tiny run."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from diffgym.networks import EnsembleMLP
from diffgym.zoo.benchmarks.harness import Budget, Session, Suite, run_suite
from diffgym.zoo.benchmarks.kernel_floor import measure_floor, record_products
from diffgym.zoo.benchmarks.train_speed import measure_speed, predict_table, speed_table


def ensemble_step(net: EnsembleMLP, x: torch.Tensor) -> None:
    net(x).square().mean().backward()


def test_recorded_products_count_what_torchs_flop_counter_counts():
    net, x = EnsembleMLP(in_dim=5, out_dim=1, members=2, hidden_dim=32), torch.randn(64, 5)
    calls = record_products(lambda: ensemble_step(net, x))
    with FlopCounterMode(display=False) as counter:
        ensemble_step(net, x)
    assert sum(call.flops for call in calls) == counter.get_total_flops() > 0
    ops = {call.op.__name__ for call in calls}
    assert {"baddbmm.default", "bmm.default"} <= ops  # forward and backward products
    expanded = [c for c in calls if any(getattr(a, "stride", (1,))[0] == 0 for a in c.args)]
    assert expanded and expanded[0].replay()() is not None  # the shared input: stride 0, replayable


def test_convolutions_and_their_backward_are_recorded_and_replayed():
    conv, x = torch.nn.Conv1d(4, 8, kernel_size=5, padding=2), torch.randn(3, 4, 16)
    calls = record_products(lambda: conv(x).sum().backward())
    assert {call.op.__name__ for call in calls} == {"convolution.default", "convolution_backward.default"}
    assert measure_floor(lambda: conv(x).sum().backward()).seconds > 0


def test_the_floor_is_the_products_time_alone():
    net, x = EnsembleMLP(in_dim=5, out_dim=1, members=2, hidden_dim=32), torch.randn(64, 5)
    floor = measure_floor(lambda: ensemble_step(net, x))
    assert floor.calls == len(record_products(lambda: ensemble_step(net, x)))
    assert floor.seconds > 0 and floor.gflops_per_second == pytest.approx(floor.flops / floor.seconds / 1e9)


def test_the_procedure_records_speed_floor_and_predict_per_precision(pendulum_file, tmp_path):
    suite = Suite(
        name="tiny_speed",
        title="Tiny speed",
        description="DQL on random Pendulum data.",
        datasets=("pendulum-tiny",),
        agents=("dql",),
        budget=Budget(steps=2),
        params={"threads": [1], "precision": ["fp32", "bf16"], "compile": False},
        procedure=measure_speed,
        reference=lambda dataset: None,  # nothing is scored
        sections=(speed_table, predict_table),
    )
    overrides = ("batch_size=16", "policy_kwargs.num_candidates=2", "policy_kwargs.actor_hidden=16")
    session = Session(
        suite, data_dir=pendulum_file.parent, out=tmp_path, budget=suite.budget, overrides=overrides
    )
    report = run_suite(session)
    record = json.loads(next(session.folder.glob("*.json")).read_text())
    assert set(record["steps_per_second"]) == {"fp32", "bf16"} == set(record["step_floor"])
    assert all(speed["1"] > 0 for speed in record["steps_per_second"].values())
    assert all(floor["seconds"] > 0 and floor["flops"] > 0 for floor in record["step_floor"].values())
    assert record["predict"]["ms"] > 0 and record["predict"]["floor"]["flops"] > 0
    text = report.read_text()
    assert "| DiffusionQL | bf16 | 1 |" in text and "predict (ms)" in text
