"""LazyAdam."""

import torch

def test_lazy_adam_is_sparse_adam_on_sparse_rows_and_adam_on_dense():
    """One LazyAdam over both kinds of parameter takes the steps torch's
    SparseAdam takes on the table and Adam on the dense vector; rows no
    gradient touched have not moved."""
    from skebm.optim import LazyAdam

    generator = torch.Generator().manual_seed(0)
    table = torch.nn.Parameter(torch.randn(50, 7, generator=generator))
    bias = torch.nn.Parameter(torch.randn(7, generator=generator))
    lazy_table, lazy_bias = (torch.nn.Parameter(p.detach().clone()) for p in (table, bias))
    reference = [torch.optim.SparseAdam([table], lr=0.01), torch.optim.Adam([bias], lr=0.01)]
    lazy = LazyAdam([lazy_table, lazy_bias], lr=0.01)
    touched = torch.zeros(50, dtype=torch.bool)
    for _ in range(20):
        rows = torch.randint(40, (30,), generator=generator)  # rows 40-49 never drawn
        touched[rows] = True
        x = torch.randn(30, 7, generator=generator)
        for (t, b), optimizers in [((table, bias), reference), ((lazy_table, lazy_bias), [lazy])]:
            for optimizer in optimizers:
                optimizer.zero_grad()
            ((torch.nn.functional.embedding(rows, t, sparse=True) + b) * x).sum().pow(2).backward()
            for optimizer in optimizers:
                optimizer.step()
    torch.testing.assert_close(lazy_table, table, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lazy_bias, bias, rtol=1e-5, atol=1e-6)
    start = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    assert (lazy_table.detach()[touched] != start[touched]).all()
    torch.testing.assert_close(lazy_table.detach()[~touched], start[~touched], rtol=0, atol=0)


def test_adam_is_fused_on_the_cpu_where_torch_can_and_steps_as_torch_adam():
    """``adam`` takes the fused kernel on the CPU from torch 2.4, and its
    steps are Adam's (with weight decay), within float32 rounding."""
    from skebm.optim import adam

    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(20, 5, generator=generator))
    copy = torch.nn.Parameter(weight.detach().clone())
    ours, reference = adam([weight], lr=0.01, weight_decay=0.1), torch.optim.Adam(
        [copy], lr=0.01, weight_decay=0.1, foreach=False)
    assert bool(ours.param_groups[0]["fused"]) == (torch.__version__ >= "2.4")
    for _ in range(50):
        x = torch.randn(5, generator=generator)
        for optimizer, parameter in [(ours, weight), (reference, copy)]:
            optimizer.zero_grad()
            (parameter @ x).sin().sum().backward()
            optimizer.step()
    assert not torch.equal(weight.detach(), torch.randn(20, 5, generator=torch.Generator(
    ).manual_seed(0)))
    torch.testing.assert_close(weight, copy, rtol=1e-5, atol=1e-6)


def test_a_saved_adam_state_loads_with_the_kernel_of_the_optimizer_it_goes_into():
    """A state saved by a fused Adam (CUDA, a newer torch) and loaded into
    an Adam that chose no fused kernel (where a pickled model was moved),
    and the reverse, keep the receiving optimizer's choice, and its steps
    continue the saved run's."""
    from skebm.optim import load_state

    def run(optimizer, parameter, steps, generator):
        for _ in range(steps):
            optimizer.zero_grad()
            (parameter @ torch.randn(5, generator=generator)).sin().sum().backward()
            optimizer.step()

    start = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    for saved_fused, own_fused in [(True, None), (None, True)]:
        whole = torch.nn.Parameter(start.clone())
        run(torch.optim.Adam([whole], lr=0.01, fused=saved_fused), whole, 20,
            torch.Generator().manual_seed(1))
        first = torch.nn.Parameter(start.clone())
        generator = torch.Generator().manual_seed(1)
        saver = torch.optim.Adam([first], lr=0.01, fused=saved_fused)
        run(saver, first, 10, generator)
        second = torch.nn.Parameter(first.detach().clone())
        receiver = torch.optim.Adam([second], lr=0.01, fused=own_fused)
        load_state(receiver, saver.state_dict())
        assert receiver.param_groups[0]["fused"] == own_fused
        run(receiver, second, 10, generator)
        torch.testing.assert_close(second, whole, rtol=1e-5, atol=1e-6)
