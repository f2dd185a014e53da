"""Keeping libpng's and libjpeg's own lines off stderr without touching anyone else's.

libpng and libjpeg report a damaged file themselves ("libpng error: IDAT: CRC error",
"Corrupt JPEG data: 12 extraneous bytes before marker 0xd9") with ``fprintf(stderr, ...)``:
C's stdio stream, past OpenCV's log level. What they meant is in the ImageError (a record's
reason), so the command line drops the lines. It does so at C's ``stderr`` *pointer*, not at
file descriptor 2: while a decode runs, the C library's ``stderr`` names a stream on a memory
file. Python's writes (every progress line, log record and traceback go to fd 2 through
``sys.stderr``, never through C's ``stderr``), other processes' and those of children started
meanwhile go straight through, whole, in order and undelayed. (An earlier version pointed fd 2
itself at a memory file for the length of each decode: lines other threads wrote meanwhile
came out late, so a line written just after the decode could overtake them, and a line whose
text and newline were written apart came out in two pieces.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import tempfile
import threading
from collections.abc import Iterator

#: The lines libpng and libjpeg write. Matched anywhere, not only at a line's start: libpng
#: writes its message and its newline apart, and another thread's C line may come in between.
DECODER_MESSAGE = re.compile(rb"(?:libpng (?:warning|error)|Corrupt JPEG data|Premature end of "
                             rb"JPEG file|Invalid SOS parameters|Inconsistent progression "
                             rb"sequence|Unknown Adobe color transform|Warning: unknown JFIF "
                             rb"revision|Application transferred too (?:few|many) scanlines)"
                             rb"[^\n]*\n")

#: The memory file starts over once this much has been passed on (a long run's damaged frames
#: must not grow it without end).
_REWIND_BYTES = 1 << 20


class _CStream:
    """C's ``stderr`` variable and the unbuffered stream on a memory file put in its place."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None)
        # glibc's name; the executable's copy where it has one, as every library resolves it
        self.pointer = ctypes.c_void_p.in_dll(libc, "stderr")
        libc.fdopen.restype, libc.fdopen.argtypes = ctypes.c_void_p, [ctypes.c_int,
                                                                      ctypes.c_char_p]
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t]
        self.fd = _memory_file()
        writer = os.dup(self.fd)
        stream = libc.fdopen(writer, b"a")
        if not stream:
            os.close(writer)
            os.close(self.fd)
            raise OSError("fdopen of the memory file failed")
        libc.setvbuf(stream, None, 2, 0)  # _IONBF: each line reaches the file when written
        # Never closed: a thread that read the pointer just before it was put back may still
        # write through it.
        self.stream: int = stream


class DecoderStderr:
    """The decoders' guard (``maskrt.image.decode_guard``, set by
    :func:`maskrt.cli.common.quiet_decoders`): for the length of the decodes running at once,
    C's ``stderr`` points at a memory file; after the last one it points back, and what other
    threads wrote to C's ``stderr`` meanwhile (rare native lines) goes on to fd 2 without the
    decoders' own lines. Where C's ``stderr`` cannot be found (not glibc) the lines pass."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users, self._saved, self._passed = 0, 0, 0
        self._c: _CStream | None = None
        self._unavailable = False

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        with self._lock:
            entered = self._enter_locked()
        try:
            yield
        finally:
            if entered:
                with self._lock:
                    self._leave_locked()

    def _stream(self) -> _CStream | None:
        if self._c is None and not self._unavailable:
            try:
                self._c = _CStream()
            except (OSError, ValueError, AttributeError):  # no such symbol, fd or memory
                self._unavailable = True
        return self._c

    def _enter_locked(self) -> bool:
        if self._users == 0:
            c = self._stream()
            if c is None:
                return False
            self._saved = c.pointer.value or 0
            c.pointer.value = c.stream
        self._users += 1
        return True

    def _leave_locked(self) -> None:
        self._users -= 1
        c = self._c
        if self._users or c is None:  # (c is never None here: entering made it)
            return
        c.pointer.value = self._saved
        end = os.fstat(c.fd).st_size
        data = os.pread(c.fd, end - self._passed, self._passed)
        self._passed = end
        _write_stderr(DECODER_MESSAGE.sub(b"", data))
        if end >= _REWIND_BYTES:  # (a line a thread that read the pointer late is writing
            os.ftruncate(c.fd, 0)    # now could be cut: once a MiB, and only C lines)
            self._passed = 0


def _write_stderr(data: bytes) -> None:
    with contextlib.suppress(OSError):  # no stderr (closed): nothing else reaches it either
        while data:
            data = data[os.write(2, data):]


def _memory_file() -> int:
    """A file in memory where the system has one (a full disk must not lose a line), in append
    mode: threads write to it at once."""
    import fcntl

    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("maskrt-decoder-stderr")
    else:
        fd, name = tempfile.mkstemp(prefix="maskrt-decoder-stderr-")
        os.unlink(name)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return fd


#: The process's one DecoderStderr (there is one C ``stderr`` per process).
DECODER_STDERR = DecoderStderr()
