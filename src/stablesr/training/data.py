"""Stage-1 data: GT photos from folders (random access) or webdataset tar shards (streaming).

Every random choice is a pure function of (run seed, the sample's global index): the epoch's file
order, the crop and the flip, and later (in the trainer) the degradation, timestep and noise. The
global index of row ``j`` of micro-batch ``m`` on process ``r`` of ``W`` is ``(m * W + r) * B + j``, so
the data position is one number (micro-batches consumed), a resumed run reads exactly what the
uninterrupted one would have, and the same global batch split over more processes sees the same samples.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler

from ._deps import IMAGE_EXTENSIONS, InputImageError, StableSRError, read_image

# purposes of derived seeds
EPOCH_ORDER, CROP, DEGRADE, DIFFUSION, POOL, POSTERIOR = range(6)


def derived_seed(seed: int, purpose: int, *index: int) -> int:
    """A well-mixed 63-bit seed for one (purpose, index) under the run seed."""
    return int(np.random.SeedSequence([seed, purpose, *index]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def generator(seed: int, purpose: int, *index: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, purpose, *index))


def list_images(dirs: Sequence[str], face_dirs: Sequence[str] = (), num_face: int = 0) -> list[Path]:
    """Sorted image files of each folder (recursive), plus the first ``num_face`` sorted face images."""
    def scan(folder: str) -> list[Path]:
        root = Path(folder)
        if not root.is_dir():
            raise StableSRError(f"{root}: data folder not found")
        return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                      and not p.name.startswith("."))

    files = [p for d in dirs for p in scan(d)]
    faces = sorted(p for d in face_dirs for p in scan(d))[:num_face]
    if not files and not faces:
        raise StableSRError(f"no training images in {', '.join(map(str, [*dirs, *face_dirs])) or '(no folders given)'}")
    return files + faces


def crop_flip(rgb: np.ndarray, size: int, g: torch.Generator, hflip: bool) -> torch.Tensor:
    """Reflect-101 pad to at least ``size``, random ``size`` crop (no resize), random h-flip -> (3, S, S)."""
    h, w = rgb.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        h, w = rgb.shape[:2]
    y = int(torch.randint(0, h - size + 1, (1,), generator=g))
    x = int(torch.randint(0, w - size + 1, (1,), generator=g))
    out = torch.from_numpy(np.ascontiguousarray(rgb[y:y + size, x:x + size])).permute(2, 0, 1).float()
    if hflip and torch.rand((), generator=g).item() < 0.5:
        out = out.flip(-1)
    return out


class ImageFolderGT(Dataset):
    """Random-access GT crops; item key = global sample index (its file comes from the epoch order)."""

    def __init__(self, files: list[Path], gt_size: int, seed: int, *, hflip: bool = True, min_side: int = 0) -> None:
        self.files, self.gt_size, self.seed, self.hflip, self.min_side = files, gt_size, seed, hflip, min_side
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def file_index(self, g: int) -> int:
        epoch, pos = divmod(g, len(self.files))
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, torch.randperm(len(self.files), generator=generator(self.seed, EPOCH_ORDER, epoch)))
        return int(self._order[1][pos])

    def __getitem__(self, g: int) -> dict:
        skipped: list[str] = []
        idx = self.file_index(g)
        for _ in range(min(len(self.files), 50)):  # a bad file: take the next one (deterministically) and report it
            path = self.files[idx]
            try:
                rgb = read_image(path).rgb
                if min(rgb.shape[:2]) < self.min_side:
                    raise InputImageError(path, f"smaller than data.min_side={self.min_side}")
                return {"gt": crop_flip(rgb, self.gt_size, generator(self.seed, CROP, g), self.hflip),
                        "index": g, "skipped": skipped}
            except InputImageError as e:
                skipped.append(str(e))
                idx = (idx + 1) % len(self.files)
        raise StableSRError(f"no readable training image near {self.files[self.file_index(g)]}: {skipped[-1]}")


class RankSampler(Sampler[int]):
    """The global indices process ``rank`` reads, micro-batch after micro-batch, from ``start_micro_step`` on."""

    def __init__(self, batch_size: int, rank: int, world: int, start_micro_step: int = 0) -> None:
        self.b, self.rank, self.world, self.start = batch_size, rank, world, start_micro_step

    def __iter__(self) -> Iterator[int]:
        m = self.start
        while True:
            first = (m * self.world + self.rank) * self.b
            yield from range(first, first + self.b)
            m += 1

    def __len__(self) -> int:  # infinite stream; DataLoader only needs this for progress estimates
        return 2**62


class ShardStreamGT(IterableDataset):
    """Streaming GT crops from webdataset tar shards (image under any of jpg/jpeg/png/webp).

    Shards are visited in a per-epoch shuffled order; sample ``g`` of the stream belongs to process
    ``(g // B) % W``; DataLoader workers split whole micro-batches round-robin, which keeps order.
    """

    def __init__(self, shards: Sequence[str], gt_size: int, seed: int, *, batch_size: int, rank: int, world: int,
                 start_micro_step: int = 0, hflip: bool = True) -> None:
        import braceexpand

        self.urls = [u for s in shards for u in braceexpand.braceexpand(s)]
        if not self.urls:
            raise StableSRError("data.shards: no shard files")
        self.gt_size, self.seed, self.hflip = gt_size, seed, hflip
        self.b, self.rank, self.world, self.start = batch_size, rank, world, start_micro_step

    def _samples(self) -> Iterator[tuple[str, bytes]]:
        import webdataset as wds

        epoch = 0
        while True:
            order = torch.randperm(len(self.urls), generator=generator(self.seed, EPOCH_ORDER, epoch)).tolist()
            stream = wds.WebDataset([self.urls[i] for i in order], shardshuffle=False, empty_check=False)
            for sample in stream:
                key = next((k for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
                if key is not None:
                    yield f"{sample.get('__url__', '')}:{sample['__key__']}", sample[key]
            epoch += 1

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        workers, wid = (info.num_workers, info.id) if info else (1, 0)
        first = self.start * self.world * self.b
        for g, (name, data) in enumerate(self._samples()):
            m, r = divmod(g // self.b, self.world)
            if g < first or r != self.rank or (m - self.start) % workers != wid:
                continue
            from PIL import Image

            try:
                rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0
            except Exception as e:  # noqa: BLE001 - a damaged member: use a black crop, report it
                rgb, skipped = np.zeros((self.gt_size, self.gt_size, 3), np.float32), [f"{name}: {e}"]
            else:
                skipped = []
            yield {"gt": crop_flip(rgb, self.gt_size, generator(self.seed, CROP, g), self.hflip), "index": g,
                   "skipped": skipped}


def collate(items: list[dict]) -> dict:
    return {"gt": torch.stack([i["gt"] for i in items]), "index": torch.tensor([i["index"] for i in items]),
            "skipped": [s for i in items for s in i["skipped"]]}


def gt_loader(cfg, seed: int, batch_size: int, rank: int, world: int, start_micro_step: int):
    """The DataLoader of GT crops for one process (``cfg`` is a :class:`DataConfig`)."""
    from torch.utils.data import DataLoader

    workers = max(0, int(cfg.num_workers))
    common = {"batch_size": batch_size, "num_workers": workers, "collate_fn": collate,
              "persistent_workers": False, "prefetch_factor": 2 if workers else None}
    if cfg.shards:
        ds = ShardStreamGT(cfg.shards, cfg.gt_size, seed, batch_size=batch_size, rank=rank, world=world,
                           start_micro_step=start_micro_step, hflip=cfg.use_hflip)
        return DataLoader(ds, **common)
    ds = ImageFolderGT(list_images(cfg.train_dirs, cfg.face_dirs, cfg.num_face), cfg.gt_size, seed,
                       hflip=cfg.use_hflip, min_side=cfg.min_side)
    return DataLoader(ds, sampler=RankSampler(batch_size, rank, world, start_micro_step), **common)


class PairPool:
    """The official training-pair queue: fill to ``size``, then swap each batch with random pool entries.

    While filling, a batch is stored and used as is; once full, the pool is shuffled, its first B
    entries are returned and replaced by the current batch (basicsr ``_dequeue_and_enqueue``).
    """

    def __init__(self, size: int) -> None:
        self.size, self.lr, self.gt, self.ptr = size, None, None, 0

    def __call__(self, lr: torch.Tensor, gt: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b = lr.shape[0]
        if self.size <= 0:
            return lr, gt
        if self.size % b:
            raise StableSRError(f"data.queue_size {self.size} must be a multiple of the batch size {b}")
        if self.lr is None:
            self.lr = torch.zeros((self.size, *lr.shape[1:]), dtype=lr.dtype, device=lr.device)
            self.gt = torch.zeros((self.size, *gt.shape[1:]), dtype=gt.dtype, device=gt.device)
        if self.ptr < self.size:
            self.lr[self.ptr:self.ptr + b], self.gt[self.ptr:self.ptr + b] = lr, gt
            self.ptr += b
            return lr, gt
        perm = torch.randperm(self.size, generator=g).to(lr.device)
        self.lr, self.gt = self.lr[perm], self.gt[perm]
        out_lr, out_gt = self.lr[:b].clone(), self.gt[:b].clone()
        self.lr[:b], self.gt[:b] = lr, gt
        return out_lr, out_gt

    def state_dict(self) -> dict:
        return {"ptr": self.ptr, "size": self.size, "lr": self.lr, "gt": self.gt}

    def load_state_dict(self, state: dict) -> None:
        self.ptr, self.size, self.lr, self.gt = int(state["ptr"]), int(state["size"]), state["lr"], state["gt"]
