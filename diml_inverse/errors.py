"""The errors of diml_inverse, inside mechgym's :class:`~mechgym.errors.MechGymError` family.

A user-caused error of either package is a :class:`~mechgym.errors.MechGymError` (a ``ValueError``): the command
lines print it as one line, and code can catch the family as a whole.
"""

from __future__ import annotations

from mechgym.errors import MechGymError


class FitDivergedError(MechGymError):
    """The loss or the parameters became non-finite during a fit (try a smaller ``lr`` or ``grad_clip``)."""


class FitFileError(MechGymError):
    """A fit file that is missing, corrupted or not written by :meth:`diml_inverse.FitResult.save`."""


__all__ = ["FitDivergedError", "FitFileError"]
