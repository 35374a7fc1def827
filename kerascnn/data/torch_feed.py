"""The training batches as Keras' torch fit reads them with the least work
on the training thread: a torch DataLoader of tensors made on the batch
thread, placed on the device from pinned memory without waiting (`feed`,
`placed`; kerascnn.training.torch_native's step places its batches alike)."""

import functools
import itertools

import numpy as np


def feed(batches, device=None):
    """`batches` (a host.TrainingBatches) as Keras' torch fit reads them
    with the least work on the training thread: a torch DataLoader handing
    over each batch as the batch thread made it, torch tensors (with a GPU
    sent there from pinned memory without waiting), instead of a generator
    of arrays that Keras converts, batch by batch, on the training thread
    (on a GPU a copy that waits for the device)."""
    import torch
    import torch.utils.data

    from keras.src.backend.torch.core import get_device

    device = torch.device(device or get_device())

    def place(batch):
        (images, params), labels = batch
        return tuple(placed(a, device) for a in (images, params)), placed(labels, device)

    stream = _stream_class()(batches.stream(place=place))
    return torch.utils.data.DataLoader(stream, batch_size=None, collate_fn=_as_is)


def _as_is(batch):
    return batch


@functools.cache
def _stream_class():
    import torch.utils.data

    class Stream(torch.utils.data.IterableDataset):
        """One stream of batches over every epoch. Keras' fit may take a
        batch from a first iterator to build the model symbolically, then
        start another to train: the second begins with what the first
        handed out (up to PEEK batches), as Keras' generator adapter
        replays the batches it peeked at."""

        PEEK = 2

        def __init__(self, stream):
            self.stream, self.kept, self.handed, self.iterators = stream, [], 0, 0

        def __iter__(self):
            self.iterators += 1
            if self.iterators == 1:
                return self._first()
            if self.kept is None or self.handed > self.PEEK:
                raise RuntimeError("kerascnn's training stream was restarted after its first batches")
            replay, self.kept = self.kept, None
            return itertools.chain(replay, self.stream)

        def _first(self):
            for batch in self.stream:
                self.handed += 1
                if self.kept is not None and self.handed <= self.PEEK:
                    self.kept.append(batch)
                yield batch

    return Stream


def placed(value, device):
    """`value` (an array or a tensor) as a tensor on `device`; from the host
    to a GPU through pinned memory, without waiting."""
    import torch

    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
    if tensor.device == device or device.type == "cpu" and tensor.device.type == "cpu":
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
