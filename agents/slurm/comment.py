"""The job comment that opts a Slurm job in: ``--comment=firsthop:tp=8,pp=4,dp=16``.

Grammar: the word ``firsthop:`` followed by comma-separated ``KEY=VALUE`` fields, where KEY is
one of ``tp``, ``cp``, ``ep``, ``dp``, ``pp`` (positive integers) or ``order`` (the framework's
rank order, dimensions joined by ``-`` as in job specs: ``order=tp-cp-dp-pp``; Megatron
convention, leftmost fastest). The firsthop word may sit among other words of the comment
(separated by whitespace). ``dp`` may be left out: it is then what the allocation's GPUs leave
(``gpus / (tp*cp*ep*pp)``). A comment without the word is not a firsthop job: every hook
leaves it alone.

Standard library only (every hook imports this first); must not import ``scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "firsthop:"
SIZE_KEYS = ("tp", "cp", "ep", "dp", "pp")
MAX_SIZE = 1 << 20


class CommentError(ValueError):
    """A firsthop comment that cannot be read (stable reason ``invalid_comment``)."""

    reason = "invalid_comment"


@dataclass(frozen=True, slots=True)
class JobShape:
    """What a firsthop comment asks for.

    Attributes:
        sizes: the sizes given (a missing ``dp`` is absent here, see :meth:`resolved`).
        order: the rank order as written, or ``None`` for the default.
    """

    sizes: dict[str, int]
    order: str | None = None

    def resolved(self, gpus: int) -> dict[str, int]:
        """Every size, ``dp`` filled in from ``gpus`` when the comment left it out.

        Raises:
            CommentError: ``dp`` is missing and the other sizes do not divide ``gpus``.
        """
        sizes = {key: self.sizes.get(key, 1) for key in SIZE_KEYS}
        if "dp" not in self.sizes:
            rest = sizes["tp"] * sizes["cp"] * sizes["ep"] * sizes["pp"]
            if gpus % rest:
                raise CommentError(
                    f"dp left out, but tp*cp*ep*pp = {rest} does not divide the {gpus} GPUs "
                    "allocated"
                )
            sizes["dp"] = gpus // rest
        return sizes


def find_spec(comment: str | None) -> str | None:
    """The ``firsthop:...`` word of a job comment, or ``None`` when the job did not opt in."""
    if not comment or PREFIX not in comment:
        return None
    for word in comment.split():
        if word.startswith(PREFIX):
            return word
    return None


def parse_comment(comment: str | None) -> JobShape | None:
    """Parse a job comment.

    Returns:
        The shape, or ``None`` when the comment has no ``firsthop:`` word.

    Raises:
        CommentError: the firsthop word is malformed (unknown or repeated key, a size that is
            not a positive integer, an empty order).
    """
    spec = find_spec(comment)
    if spec is None:
        return None
    body = spec[len(PREFIX) :]
    if not body:
        raise CommentError("empty firsthop comment (expected e.g. firsthop:tp=8,dp=4)")
    sizes: dict[str, int] = {}
    order: str | None = None
    seen: set[str] = set()
    for field in body.split(","):
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise CommentError(f"bad field {field!r} in {spec!r} (expected KEY=VALUE)")
        if key in seen:
            raise CommentError(f"{key} given twice in {spec!r}")
        seen.add(key)
        if key == "order":
            if not value.strip():
                raise CommentError(f"empty order in {spec!r}")
            order = value.strip()
        elif key in SIZE_KEYS:
            if not value.isdigit() or not 1 <= int(value) <= MAX_SIZE:
                raise CommentError(f"{key}={value!r} in {spec!r} is not a positive integer")
            sizes[key] = int(value)
        else:
            raise CommentError(f"unknown key {key!r} in {spec!r} (use tp, cp, ep, dp, pp, order)")
    return JobShape(sizes, order)
