"""Writing a file whole or not at all: a hidden temporary file in the same folder, renamed into place."""
import os

from dataset.errors import DatasetError


def write_file_atomic(path, parts, buffering=-1):
    """Write the byte strings `parts` as the file at path via a hidden temporary file and os.replace:
    a crash leaves at most the hidden file behind, removed when the write fails here. An OSError
    (no room, no permission, no folder) ends in a DatasetError naming the file."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb", buffering=buffering) as f:
            f.writelines(parts)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError):
            raise DatasetError(f"cannot write {path} ({error.strerror}); check that its folder exists, "
                               f"is writable and has room.") from None
        raise
