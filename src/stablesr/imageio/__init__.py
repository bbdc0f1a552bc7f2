"""Image files: the only room of the package that knows about files and formats.

:mod:`.read` (decode into float planes), :mod:`.write` (atomic writes that never overwrite an input),
:mod:`.naming` (input discovery, output names and extensions, batch output planning).
"""
