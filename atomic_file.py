"""Writing a file whole or not at all, for everything this project writes that a kill must not leave half
written: checkpoints, dataset shards and their labels, logs, images. The standard library only, so that
both the training code and the data package (whose scripts run on their own) can import it.
"""

import os


class AtomicFile:
    """A binary file that appears at `path` whole, or not at all.

        with AtomicFile(path) as f:
            f.write(...)

    The bytes go to a hidden temporary file beside path (.<name>.tmp-<pid>). Leaving the block without an
    exception flushes it to disk, renames it over path (os.replace) and flushes the folder, so that the
    rename too survives a crash. An exception in the block, or a failure in any of those steps (a full
    disk, a missing folder), removes the temporary file and leaves path as it was; a kill leaves at most
    the hidden file. Where the writing spans several calls (dataset.tfrecord.TFRecordWriter), commit() or
    discard() ends it instead of the block. buffering: as open's."""

    def __init__(self, path, buffering=-1):
        self.path = os.fspath(path)
        self.folder, name = os.path.split(os.path.abspath(self.path))
        self.tmp = os.path.join(self.folder, f".{name}.tmp-{os.getpid()}")
        self.file = open(self.tmp, "wb", buffering=buffering)

    def commit(self):
        """Flush the file to disk and rename it to path; on any failure discard it and raise."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        fsync_folder(self.folder)

    def discard(self):
        """Close and remove the temporary file; path keeps what it held."""
        try:
            self.file.close()
        except OSError:  # flushing the rest of a write that already failed
            pass
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def fsync_folder(folder):
    """Flush a folder's entries (a rename into it) to disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
