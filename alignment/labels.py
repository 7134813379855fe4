"""Pair labels, shared by the losses, the metrics and the data files (no torch here: the web app's
snapshot export imports this).

``1`` = A better, ``0`` = tie, ``-1`` = B better; ``LABEL_MISSING`` marks a dimension nobody judged.
"""

LABEL_A_BETTER = 1
LABEL_TIE = 0
LABEL_B_BETTER = -1
LABEL_MISSING = -100
