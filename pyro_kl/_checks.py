"""The one check for a count given by the user: a whole number with a floor."""

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
