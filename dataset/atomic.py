"""The data side's use of the one atomic writer (atomic_file.AtomicFile): its OSError said as a
DatasetError."""
import os

from atomic_file import AtomicFile
from dataset.errors import DatasetError


def write_file_atomic(path, parts, buffering=-1):
    """Write the byte strings `parts` as the file at path, whole or not at all (atomic_file.AtomicFile).
    An OSError (no room, no permission, no folder) ends in a DatasetError naming the file."""
    try:
        with AtomicFile(path, buffering) as f:
            f.writelines(parts)
    except OSError as error:
        raise DatasetError(f"cannot write {os.fspath(path)} ({error.strerror}); check that its folder "
                           f"exists, is writable and has room.") from None
