"""The two kinds of failure the scripts report as one line instead of a traceback.

- UserError: bad input (a setting out of range, a file that is not a checkpoint, flags that
  contradict a checkpoint): "error: ..." and exit status 2, before any work where possible.
- RunError: the run itself failed (disk full, a read-only place, a loss that became NaN):
  "error: ..." and exit status 1; every file written before it is intact.
"""
import errno
import os
import sys


class UserError(Exception):
    """Bad input from the user: printed as one line ("error: ...") and exit status 2."""


class RunError(Exception):
    """A failure that is not bad input: printed as one line ("error: ...") and exit status 1."""


_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted"}


def write_failure(path, err):
    """A RunError naming `path` and why writing it failed (no space left, read-only, ...).
    `err` is the OSError, or what torch.save raised instead (a RuntimeError that hides the
    OSError: then the place itself is examined)."""
    reason = _REASONS.get(getattr(err, "errno", None))
    if reason is None:
        place = os.path.dirname(os.path.abspath(path))
        try:
            stat = os.statvfs(place)
            if stat.f_flag & os.ST_RDONLY:
                reason = _REASONS[errno.EROFS]
            elif stat.f_bavail * stat.f_frsize < 1 << 20:
                reason = _REASONS[errno.ENOSPC]
        except OSError:
            pass
    if reason is None:
        first = str(err).splitlines()[0] if str(err) else ""
        reason = getattr(err, "strerror", None) or f"{type(err).__name__}: {first[:120]}"
    return RunError(f"cannot write {path}: {reason} (files written before it are intact)")


def run(main, argv=None):
    """Call main(argv); a UserError becomes one line on stderr and exit status 2, a RunError one
    line and exit status 1."""
    try:
        return main(sys.argv[1:] if argv is None else argv) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
