"""Writing a file so that no reader ever sees half of it: into a temporary file beside it, then
renamed over it (a rename within a directory is atomic). A failure or an interrupt removes the
temporary file again."""
import os
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path, write, prefix=".tmp-", durable=False):
    """write(f) into a temporary file beside `path`, then rename it over `path`. durable: for
    the user's own files - on disk before the rename (fsync), and with the mode a plain open()
    would give (mkstemp's is 0600). Raises what the writing raised."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if durable:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
