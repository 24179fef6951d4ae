"""Training data: cached preprocessed cases → MONAI random patches."""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import list_data_collate
from monai.transforms import (
    Compose,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from medtl.config import AugmentConfig
from medtl.preprocess.case import load_case


def training_item(case, name: str, label_map: dict[int, int] | None = None) -> dict:
    """One preprocessed case as a training item: image, int64 label and name.

    Args:
        case: a :class:`medtl.preprocess.case.PreprocessedCase` with a label.
        name: the case's name (``case`` key).
        label_map: optional remapping of label values (unmapped values become 0).

    Raises:
        ValueError: the case has no label.
    """
    if case.label is None:
        raise ValueError(f"{name}: a training case needs a label")
    label = case.label.astype(np.int64)
    if label_map:
        label = np.vectorize(lambda v: label_map.get(int(v), 0))(label)
    return {
        "image": torch.from_numpy(case.image),
        "label": torch.from_numpy(label[None]),
        "case": name,
    }


def load_training_cases(
    paths: Sequence[Path], label_map: dict[int, int] | None = None
) -> list[dict]:
    """Load preprocessed cases into memory once (no re-resampling per epoch).

    Args:
        paths: ``.npz`` files from the preprocess stage.
        label_map: optional remapping of label values (e.g. source classes → task classes).

    Raises:
        ValueError: a case has no label.
    """
    items = []
    for p in paths:
        case = load_case(Path(p))
        if case.label is None:
            raise ValueError(f"{p}: a training case needs a label")
        items.append(training_item(case, Path(p).stem, label_map))
    return items


def training_transform(
    patch_size: Sequence[int], augment: AugmentConfig, pos_fraction: float, samples: int
) -> Compose:
    """Random patch sampling and augmentation, with MONAI's dictionary transforms."""
    keys = ["image", "label"]
    # Rotating by 90 degrees in the x-y plane swaps the patch's x and y sides, so it is
    # only applied to patches with equal x and y sides.
    rotate = (
        [RandRotate90d(keys, prob=augment.rotate90, spatial_axes=(0, 1))]
        if patch_size[0] == patch_size[1]
        else []
    )
    return Compose(
        [
            SpatialPadd(keys, spatial_size=list(patch_size)),
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=list(patch_size),
                pos=pos_fraction,
                neg=1.0 - pos_fraction,
                num_samples=samples,
            ),
            RandFlipd(keys, prob=augment.flip, spatial_axis=0),
            RandFlipd(keys, prob=augment.flip, spatial_axis=1),
            RandFlipd(keys, prob=augment.flip, spatial_axis=2),
            *rotate,
            RandScaleIntensityd("image", factors=augment.intensity_scale, prob=0.5),
            RandShiftIntensityd("image", offsets=augment.intensity_shift, prob=0.5),
            RandGaussianNoised("image", prob=augment.noise, std=0.1),
        ]
    )


def derive_seed(*keys: int) -> int:
    """A 32-bit seed derived from integers (the run's seed, a purpose, a counter).

    Independent streams from one seed, each reproducible from its keys alone, so that a
    stream's state is a counter.

    Example:
        >>> a = derive_seed(0, 1, 5)
        >>> a == derive_seed(0, 1, 5), a == derive_seed(0, 1, 6), 0 <= a < 2**32
        (True, False, True)
    """
    entropy = [int(k) % 2**64 for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


class SeededStream:
    """An endless batch stream whose batch ``i`` depends only on ``(seed, i)``.

    Its whole state is thus its position, the number of batches drawn
    (:meth:`state_dict`); a stream restored with :meth:`load_state_dict` continues
    exactly where the saved one stopped. Subclasses draw batch ``self.index`` in
    ``__next__`` and count it.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.index = 0

    def __iter__(self) -> SeededStream:
        return self

    def state_dict(self) -> dict[str, int]:
        """The stream's position (plain integers)."""
        return {"seed": self.seed, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a position saved by :meth:`state_dict`.

        Raises:
            ValueError: the state is of a stream with another seed.
        """
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"{type(self).__name__}: the saved stream has seed {state['seed']}, this one "
                f"{self.seed}; expected the same seed"
            )
        self.index = int(state["index"])


class PatchStream(SeededStream):
    """Endless, resumable stream of augmented patch batches, reproducible from ``seed``.

    Each batch holds ``batch_size`` patches of one case (which keeps the loader cheap on
    small CPU machines); the cases are visited in a new random order every pass. Batch
    ``i`` depends only on ``(seed, i)``: the visiting order of its pass and the
    transforms' random state are derived from them. The stream's whole state is thus
    the number of batches drawn (:meth:`state_dict`), and a stream restored with
    :meth:`load_state_dict` continues exactly where the saved one stopped.

    Args:
        items: cases from :func:`load_training_cases`.
        patch_size: patch in voxels.
        batch_size: patches per batch.
        augment: augmentation settings.
        pos_fraction: share of patches centred on foreground.
        seed: the stream's seed.

    Example:
        >>> import torch
        >>> from medtl.config import AugmentConfig
        >>> label = torch.zeros(1, 20, 20, 36, dtype=torch.int64)
        >>> label[:, 5:12, 5:12, 5:20] = 1
        >>> items = [{"image": label.float(), "label": label}]
        >>> a = PatchStream(items, (16, 16, 32), 2, AugmentConfig(), 0.5, seed=0)
        >>> _ = next(a); saved = a.state_dict(); second = next(a)
        >>> b = PatchStream(items, (16, 16, 32), 2, AugmentConfig(), 0.5, seed=0)
        >>> b.load_state_dict(saved)
        >>> torch.equal(next(b)["image"], second["image"]), second["image"].shape
        (True, torch.Size([2, 1, 16, 16, 32]))
    """

    #: Purposes of the derived seeds.
    _ORDER, _TRANSFORM = 0, 1

    def __init__(
        self,
        items: list[dict],
        patch_size: Sequence[int],
        batch_size: int,
        augment: AugmentConfig,
        pos_fraction: float,
        seed: int,
    ) -> None:
        if not items:
            raise ValueError("PatchStream: no training cases")
        super().__init__(seed)
        self.transform = training_transform(patch_size, augment, pos_fraction, batch_size)
        self.items = [{k: v for k, v in it.items() if k != "case"} for it in items]
        self._order: tuple[int, list[int]] | None = None

    def _case(self, index: int) -> dict:
        n = len(self.items)
        epoch, pos = divmod(index, n)
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self._ORDER, epoch))
            self._order = (epoch, torch.randperm(n, generator=g).tolist())
        return self.items[self._order[1][pos]]

    def __next__(self) -> dict:
        item = self._case(self.index)
        self.transform.set_random_state(seed=derive_seed(self.seed, self._TRANSFORM, self.index))
        samples = self.transform(dict(item))
        self.index += 1
        batch = list_data_collate([samples])
        return {k: _plain(v) for k, v in batch.items()}


class Prefetcher:
    """The batches of a stream (e.g. a :class:`PatchStream`), prepared ahead by a thread.

    A thread draws up to ``depth`` batches ahead into a bounded queue, so that batch
    ``i + 1`` is cropped and augmented on the CPU while step ``i`` runs (the idea of
    MONAI's ``ThreadBuffer``, with what a resumable run needs besides). The batches and
    their order are exactly those of the stream itself: batch ``i`` depends only on
    ``(seed, i)``, never on the thread's timing. :meth:`state_dict` is the position of
    the consumer (the batches handed out), not of the thread, so a saved run resumes
    with the first batch it has not trained on. An error in the thread is raised by
    :meth:`__next__` where the batch was wanted. :meth:`close` (or leaving a ``with``
    block) stops the thread; a closed prefetcher restarts from its position when it is
    asked for the next batch. ``depth=0`` draws each batch when it is wanted, without a
    thread.

    Args:
        stream: the batches to prepare.
        depth: batches prepared ahead (0: none, no thread).
        pin_memory: put the prepared batches in page-locked memory, so that they are
            copied to a GPU with ``non_blocking=True`` while the CPU goes on (CUDA only).

    Example:
        >>> import torch
        >>> class Squares(SeededStream):
        ...     def __next__(self):
        ...         self.index += 1
        ...         return {"image": torch.tensor(float(self.index) ** 2)}
        >>> with Prefetcher(Squares(seed=0), depth=2) as batches:
        ...     got = [float(next(batches)["image"]) for _ in range(3)]
        ...     position = batches.state_dict()
        >>> got, position["index"]
        ([1.0, 4.0, 9.0], 3)
    """

    #: Seconds between checks of the stop signal while the thread waits for room.
    POLL_S = 0.05
    #: Seconds :meth:`close` waits for the thread to finish the batch it is preparing.
    JOIN_S = 60.0

    def __init__(self, stream: SeededStream, depth: int = 2, pin_memory: bool = False) -> None:
        if depth < 0:
            raise ValueError(f"Prefetcher: depth {depth}; expected 0 or more batches")
        self.stream = stream
        self.depth = int(depth)
        self.pin_memory = bool(pin_memory)
        self._consumed = stream.index
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> dict:
        if self.depth == 0:
            batch = next(self.stream)
            self._consumed = self.stream.index
            return batch
        if self._thread is None:
            self._start()
        assert self._queue is not None and self._thread is not None
        while True:
            try:
                kind, value = self._queue.get(timeout=self.POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("Prefetcher: the batch thread has stopped") from None
        if kind == "error":
            self.close()
            raise value
        self._consumed += 1
        return value

    @property
    def running(self) -> bool:
        """Whether the batch thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _start(self) -> None:
        # the thread starts where the consumer stands (after a close or a reload)
        self.stream.index = self._consumed
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(
            target=self._produce,
            args=(self._queue, self._stop),
            name="medtl-prefetch",
            daemon=True,
        )
        self._thread.start()

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        # One CPU thread for this thread's tensor operations (the setting is per thread
        # with OpenMP): a second team of threads beside the training's would oversubscribe
        # the cores. The transforms' results do not depend on it.
        torch.set_num_threads(1)
        try:
            while not stop.is_set():
                batch = next(self.stream)
                if self.pin_memory:
                    batch = {k: _pinned(v) for k, v in batch.items()}
                if not self._put(out, stop, ("batch", batch)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put(out, stop, ("error", error))

    def _put(self, out: queue.Queue, stop: threading.Event, entry: tuple[str, object]) -> bool:
        """Queue an entry, waiting for room; False once the consumer has closed."""
        while not stop.is_set():
            try:
                out.put(entry, timeout=self.POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """Stop the thread and drop the batches prepared ahead (safe to call again)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(self.JOIN_S)
        if thread.is_alive():  # a daemon thread: it cannot keep the process alive
            warnings.warn(
                f"Prefetcher: the batch thread did not stop within {self.JOIN_S:.0f} s",
                RuntimeWarning,
                stacklevel=2,
            )
        self._queue = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def state_dict(self) -> dict[str, int]:
        """The consumer's position: the batches handed out, not those prepared ahead."""
        return {"seed": self.stream.seed, "index": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position; the batches prepared ahead are dropped.

        Raises:
            ValueError: the state is of a stream with another seed.
        """
        self.close()
        self.stream.load_state_dict(state)
        self._consumed = self.stream.index


def _pinned(value):
    """A tensor in page-locked memory (other values unchanged)."""
    return value.pin_memory() if isinstance(value, torch.Tensor) else value


def _plain(value):
    """A MetaTensor as a plain tensor (other values unchanged)."""
    return value.as_tensor() if hasattr(value, "as_tensor") else value
