"""Test sets from clean photos: crops, the Real-ESRGAN (or face / bicubic) degradation, files on disk.

The degradation itself lives in :mod:`stablesr.degradation` (pure tensors); this room reads the HR
images, writes ``gt/``, ``lr/`` and ``meta.jsonl`` atomically and resumes. ``stablesr make-testset`` is
its command line.
"""
