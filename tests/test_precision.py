"""precision="bf16": refused on a GPU without bfloat16, a warning on a CPU that would emulate it."""

import pytest
import torch

from diffgym import precision


def test_bf16_without_native_support_warns_on_cpu_and_is_refused_on_a_gpu(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16 instructions"):
        assert precision.check_precision("bf16", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(ValueError, match="this GPU has no bfloat16 support; use precision='fp32'"):
        precision.check_precision("bf16", torch.device("cuda"))
