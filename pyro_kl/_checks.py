"""The checks behind the counts and numbers a user gives."""

import math
import numbers


def whole_number(name: str, value, *, minimum: int, meaning: str = "") -> int:
    """``value`` as an ``int``, or a :class:`ValueError` that names the fix.

    Booleans and floats are refused (``2.5`` and ``True`` are not counts);
    NumPy's integers are accepted.

    :param str name: the argument's name, as the user wrote it.
    :param minimum: the smallest value allowed.
    :param str meaning: what the number counts, said in the message.

    Example::

        whole_number("num_steps", 200, minimum=0)  # 200
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name}={value!r}; use a whole number >= {minimum}{what}.")
    return int(value)


def is_number(value, *, finite: bool = True) -> bool:
    """Whether ``value`` is a real number (not a bool), finite unless ``finite=False``:
    the one test behind every option check that names its own fix.

    Example::

        is_number(0.5), is_number(True), is_number(math.inf)  # (True, False, False)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return not finite or math.isfinite(value)
