"""VidPref's one vocabulary: the judged dimensions and the pair labels, imported everywhere — the web app,
the workers, the ML library and the studies (no torch and no Django here, so every layer may import it; see
docs/architecture.md §9).

Dimensions have two spellings, each with one job:

* ``DIMENSIONS`` (``"vq"``, ``"mq"``, ``"ta"``): field names — database columns, the API's JSON, snapshot
  columns, the toy world's oracle scores.
* ``DIMENSION_NAMES`` (``"VQ"``, ``"MQ"``, ``"TA"``): the paper's and VideoAlign's names — CSV columns,
  metrics, reports and pages.

Labels: ``1`` = A better, ``0`` = tie, ``-1`` = B better; ``LABEL_MISSING`` marks a dimension nobody judged.
"""

DIMENSIONS: tuple[str, ...] = ("vq", "mq", "ta")
DIMENSION_NAMES: tuple[str, ...] = ("VQ", "MQ", "TA")
DIMENSION_NAME = dict(zip(DIMENSIONS, DIMENSION_NAMES))
"""``"vq"`` → ``"VQ"``."""
DIMENSION_TITLES = {"vq": "Visual quality", "mq": "Motion quality", "ta": "Text alignment"}
OVERALL = "overall"
OVERALL_NAME = "Overall"
SCORE_KEYS: tuple[str, ...] = (*DIMENSIONS, OVERALL)
"""The three dimensions and their sum, as reward scores are keyed."""
SCORE_NAMES: tuple[str, ...] = (*DIMENSION_NAMES, OVERALL_NAME)

LABEL_A_BETTER = 1
LABEL_TIE = 0
LABEL_B_BETTER = -1
LABEL_MISSING = -100

VIDEOALIGN_COLUMNS: tuple[str, ...] = (
    "path_A",
    "path_B",
    "prompt",
    *DIMENSION_NAMES,
    "fps_A",
    "num_frames_A",
    "fps_B",
    "num_frames_B",
)
"""The columns of KwaiVGI/VideoAlign's training CSV, in its order."""
VIDEOALIGN_LABELS = {"A": LABEL_A_BETTER, "B": LABEL_B_BETTER, "same": LABEL_TIE}
"""VideoAlign's label strings → our int labels."""
