"""Pickles that load anywhere: torch objects stored on the CPU."""

import copy

import torch

from ._runtime import resolve_device

__all__ = ["DevicePickleMixin"]


class DevicePickleMixin:
    """Pickles every torch attribute on the CPU and puts it back on the fitted
    device (``device_``) when the loading machine has it, on the CPU
    otherwise: a model fitted on a GPU scores on a machine without one."""

    def __getstate__(self):
        """Store every torch object on the CPU, whatever device it lives on."""
        state = dict(super().__getstate__())  # object's is self.__dict__ itself
        for key, value in state.items():
            if isinstance(value, (torch.nn.Module, torch.Tensor)):
                state[key] = copy.deepcopy(value).cpu()
        if "device_" in state:
            state["device_"] = str(state["device_"])
        return state

    def __setstate__(self, state):
        """Put the torch objects back on the fitted device when this machine
        has it, on the CPU otherwise (a GPU-fitted model scores anywhere)."""
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
