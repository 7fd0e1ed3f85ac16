"""The two ways a mask or weights file is turned down: :class:`MaskFileError` (refused) and
:class:`MaskFileWarning` (loaded, but not verified). Both carry one line naming the problem.

Everything that reads an untrusted file (:mod:`rst.network.regular_files`, :mod:`rst.network.mask_checks`,
:mod:`rst.network.masks`) raises these; ``rst.network.mask_checks`` re-exports them.
"""


class MaskFileError(ValueError):
    """A mask file that cannot be used; the message names the problem."""


class MaskFileWarning(UserWarning):
    """A mask file that loads, but whose metadata could not be verified (the message says why)."""
