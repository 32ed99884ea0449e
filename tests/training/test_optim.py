"""AdamW kernels, the EMA update and the FSDP2 precision policy (training/optim.py): same numbers, fewer kernels."""

from __future__ import annotations

import pytest
import torch

from training.optim import (
    EmaImpl,
    OptimizerImpl,
    ema_update,
    fsdp_policy,
    make_adamw,
    split_legacy_param_group,
)


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 32, 3, 3), (64,), (128, 64), (7,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def _train(impl: str, steps: int = 5) -> tuple[list[torch.Tensor], dict]:
    params = _params()
    opt = make_adamw(params, lr=1e-2, weight_decay=0.01, impl=impl, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in params], opt.state_dict()


@pytest.mark.parametrize("impl", ["fused", "foreach", "auto"])
def test_adamw_kernels_give_the_for_loop_update_and_state(impl):
    ref, ref_state = _train("for_loop")
    got, state = _train(impl)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert state["state"].keys() == ref_state["state"].keys()  # a run resumes under any implementation
    for k in ref_state["state"]:
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state["state"][k][name], ref_state["state"][k][name], rtol=1e-5, atol=1e-7)


def test_auto_takes_foreach_on_cpu_and_names_the_choices():
    opt = make_adamw(_params(), lr=1e-3, weight_decay=0.0, impl=OptimizerImpl.AUTO, device=torch.device("cpu"))
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]
    with pytest.raises(ValueError, match="is not a valid OptimizerImpl"):
        make_adamw(_params(), lr=1e-3, weight_decay=0.0, impl="apex", device=torch.device("cpu"))


def test_foreach_ema_equals_the_loop():
    live = [p.detach() for p in _params(3)]
    a = [p.detach().clone() for p in _params(4)]
    b = [t.clone() for t in a]
    for _ in range(3):
        ema_update(a, live, 0.99, EmaImpl.LOOP)
        ema_update(b, live, 0.99, EmaImpl.FOREACH)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    expected = _params(4)[0].detach() * 0.99 ** 3 + live[0] * (1 - 0.99 ** 3)  # closed form of 3 steps
    torch.testing.assert_close(a[0], expected, rtol=1e-5, atol=1e-6)
    ema_update(b, [t.bfloat16() for t in live], 0.5, "foreach")  # bf16 live weights into the fp32 EMA
    assert all(t.dtype == torch.float32 for t in b)
    with pytest.raises(ValueError, match="EMA has 4 tensors, the model 3"):
        ema_update(b, live[:3], 0.5, "foreach")


def test_fsdp_bf16_policy_keeps_fp32_master_weights_and_reductions():
    mp = fsdp_policy("bf16")
    assert mp.param_dtype is torch.bfloat16 and mp.reduce_dtype is torch.float32
    assert fsdp_policy("fp32").param_dtype is None
    with pytest.raises(ValueError, match=r"fsdp_param_dtype must be one of \['fp32', 'bf16'\]"):
        fsdp_policy("fp16")


def test_a_one_group_checkpoint_splits_into_the_unet_and_text_groups_and_loads():
    unet, text = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    old = torch.optim.AdamW(list(unet.parameters()) + list(text.parameters()), lr=1e-3)  # the former single group
    text(unet(torch.randn(2, 3))).sum().backward()
    old.step()
    new = make_adamw([{"params": list(unet.parameters())}, {"params": list(text.parameters())}], lr=1e-3,
                     weight_decay=0.01, impl="foreach", device=torch.device("cpu"))
    new.load_state_dict(split_legacy_param_group(old.state_dict(), 2, "unet."))  # index-keyed
    assert [len(g["params"]) for g in new.param_groups] == [2, 2]
    assert torch.equal(new.state[text.weight]["exp_avg"], old.state[text.weight]["exp_avg"])
    fqn = {"state": {}, "param_groups": [{"lr": 1e-3, "params": ["unet.w", "unet.b", "text.w"]}]}
    split = split_legacy_param_group(fqn, 99, "unet.")
    assert [g["params"] for g in split["param_groups"]] == [["unet.w", "unet.b"], ["text.w"]]
    assert all(g["lr"] == 1e-3 for g in split["param_groups"])
    two = {"state": {}, "param_groups": [{"params": [0]}, {"params": [1]}]}
    assert split_legacy_param_group(two, 1, "unet.") is two  # already two groups: unchanged
