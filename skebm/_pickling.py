"""Pickles that load anywhere: torch objects stored on the CPU."""

import copy

import torch
from torch.nn.utils import parametrize

from ._runtime import resolve_device

__all__ = ["DevicePickleMixin"]


class DevicePickleMixin:
    """Pickles every torch attribute on the CPU and puts it back on the fitted
    device (``device_``) when the loading machine has it, on the CPU
    otherwise: a model fitted on a GPU scores on a machine without one."""

    def __getstate__(self):
        """Store every torch object on the CPU, whatever device it lives on,
        a module's parametrizations taken off (torch refuses to pickle a
        parametrized module: a spectral norm's, say)."""
        state = dict(super().__getstate__())  # object's is self.__dict__ itself
        for key, value in state.items():
            if isinstance(value, (torch.nn.Module, torch.Tensor)):
                state[key] = _picklable(copy.deepcopy(value).cpu())
        if "device_" in state:
            state["device_"] = str(state["device_"])
        return state

    def __setstate__(self, state):
        """Put the torch objects back on the fitted device when this machine
        has it, on the CPU otherwise (a GPU-fitted model scores anywhere)."""
        state = {key: value.restored() if isinstance(value, _Unparametrized) else value
                 for key, value in state.items()}
        super().__setstate__(state)
        if "device_" not in state:
            return
        try:
            device = resolve_device(state["device_"])
        except ValueError:
            device = torch.device("cpu")
        self.device_ = device
        for key, value in list(vars(self).items()):
            if isinstance(value, (torch.nn.Module, torch.Tensor)):
                setattr(self, key, value.to(device))


def _picklable(value):
    """``value``, or an :class:`_Unparametrized` of it when it is a module
    with parametrizations."""
    if isinstance(value, torch.nn.Module) and any(
            parametrize.is_parametrized(module) for module in value.modules()):
        return _Unparametrized(value)
    return value


class _Unparametrized:
    """A copy of a module with its parametrizations taken off, each kept as
    (the submodule's name, the tensor's name, its parametrization modules, in
    order), so that it pickles; :meth:`restored` puts them back, their
    state (a spectral norm's power-iteration vectors) included."""

    def __init__(self, module):
        self.parametrizations = []
        for name, submodule in list(module.named_modules()):
            if not parametrize.is_parametrized(submodule):
                continue
            # By hand: torch's remove_parametrizations edits the parametrized
            # class, which this copy shares with the module it copies.
            parametrized = submodule.parametrizations
            del submodule.parametrizations
            submodule.__class__ = type(submodule).__bases__[0]
            for tensor, parametrizations in parametrized.items():
                setattr(submodule, tensor, parametrizations.original)
                self.parametrizations.append((name, tensor, list(parametrizations)))
        self.module = module

    def restored(self):
        for name, tensor, parametrizations in self.parametrizations:
            for parametrization in parametrizations:
                parametrize.register_parametrization(self.module.get_submodule(name), tensor,
                                                     parametrization, unsafe=True)
        return self.module
