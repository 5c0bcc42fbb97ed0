"""CUDA graphs for the MTCNN cascade: a step captured once and replayed on its static inputs' current
contents (detect.py captures the fixed-shape front and, per power-of-two bucket of boxes, crops + R-Net and
crops + O-Net). At batch 1 a GPU cascade is bound by host-side launches, which a replay removes.

Off CUDA nothing is captured: ``Captured.replay`` calls the step again under ``NoNewHostTensors``, so the
static-buffer logic (bucket padding, output slicing, no host data inside a step) is tested on a CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class NoNewHostTensors(TorchDispatchMode):
    """Raises where code would make a tensor from host data (a literal, an index list): inside a CUDA graph
    capture that is a pageable host-to-device copy, which the capture refuses. The CPU stand-in for a
    capture runs under this, so the tests catch it without a GPU."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.lift_fresh.default:
            raise RuntimeError("a tensor made from host data inside a captured MTCNN step")
        return func(*args, **(kwargs or {}))


class CaptureFailed(Exception):
    """A CUDA graph capture raised (the cause is chained)."""


class Captured:
    """``fn(*inputs)`` captured once as a CUDA graph; ``replay()`` reruns it on the inputs' current contents
    and returns the same output tensors. Off CUDA there is no graph and ``replay()`` calls ``fn`` again:
    the tests use that to check the static-buffer logic (bucket padding, output slicing) on a CPU."""

    def __init__(self, fn, inputs: tuple[torch.Tensor, ...], device: torch.device):
        self.fn, self.inputs, self.graph = fn, inputs, None
        self.sources: Any = None  # what the caller keeps with a graph (a front's crop sources, made once)
        if device.type == "cuda":
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN plans, cached constants
                fn(*inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self.graph):
                    self.outputs = fn(*inputs)
            except RuntimeError as err:
                raise CaptureFailed() from err
        else:
            self.outputs = fn(*inputs)  # the warm-up, as on CUDA: caches fill here, not under the stand-in

    def replay(self):
        if self.graph is None:
            with NoNewHostTensors():
                self.outputs = self.fn(*self.inputs)
        else:
            self.graph.replay()
        return self.outputs
