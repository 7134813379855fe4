"""The toy world: a CPU-scale synthetic video world with oracle judges and simulated annotators.

Clips are tiny procedural videos (default 9 frames of 32×32 RGB) of one coloured shape moving as a
prompt of a small grammar says ("a red square moving left quickly"). Defects of controllable
strength spoil one judged dimension each — visual quality (noise, blur, banding), motion quality
(jitter, teleport, freeze), text alignment (wrong colour, shape, direction). Oracle scores
measure those dimensions from the pixels and the prompt alone, so they also score generated clips;
simulated annotators turn oracle scores into left / right / tie judgments with configurable
reliability. Pure numpy (plus PyAV for MP4s); no torch, no Django.

Run ``python -m alignment.toyworld --help`` for the command line (render pairs, score files). The
validation studies of the world (the oracle's correlation table, the annotators' agreement) live in
``studies.toyworld_tables`` (``python -m studies oracle-table``, ``python -m studies annotator-agreement``).
"""

from alignment.data.video import read_mp4, write_mp4
from alignment.labels import DIMENSIONS
from alignment.toyworld.annotators import (
    ANNOTATOR_PROFILES,
    DEFAULT_MIX,
    LABELS,
    AnnotatorProfile,
    SimulatedAnnotator,
    make_annotator_pool,
    oracle_labels,
)
from alignment.toyworld.oracle import OracleScores, oracle_scores, score_clip
from alignment.toyworld.pairs import ToyClip, ToyPair, export_pairs, make_pairs
from alignment.toyworld.prompts import COLOURS, DIRECTIONS, SHAPES, SPEEDS, ToyPrompt, all_prompts
from alignment.toyworld.render import DEFECTS_BY_DIMENSION, DefectSpec, render_clip

__all__ = [
    "ANNOTATOR_PROFILES",
    "COLOURS",
    "DEFAULT_MIX",
    "DEFECTS_BY_DIMENSION",
    "DIMENSIONS",
    "DIRECTIONS",
    "LABELS",
    "SHAPES",
    "SPEEDS",
    "AnnotatorProfile",
    "DefectSpec",
    "OracleScores",
    "SimulatedAnnotator",
    "ToyClip",
    "ToyPair",
    "ToyPrompt",
    "all_prompts",
    "export_pairs",
    "make_annotator_pool",
    "make_pairs",
    "oracle_labels",
    "oracle_scores",
    "read_mp4",
    "render_clip",
    "score_clip",
    "write_mp4",
]
