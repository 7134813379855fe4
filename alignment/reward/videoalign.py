"""Loading KwaiVGI's released VideoReward (VideoAlign) checkpoints, with VideoAlign-compatible inputs.

The format, as VideoAlign's ``train_reward.py``/``trainer.py``/``utils.py``/``inference.py`` write and read it:

* ``<folder>/model_config.json``: ``{"data_config", "training_args", "model_config", "peft_lora_config",
  "inference_config"}``. ``model_config.model_name_or_path`` names the base Qwen2-VL (the released one:
  ``Qwen/Qwen2-VL-2B-Instruct``), ``output_dim`` (3), ``use_special_tokens``, ``reward_token`` ("special");
  ``data_config`` holds ``fps`` (2.0), ``num_frames`` (None: fps sampling), ``max_frame_pixels``,
  ``sample_type`` ("uniform"), ``eval_dim``, ``prompt_template_type`` ("detailed_special");
  ``inference_config`` holds ``VQ_mean``/``VQ_std``/``MQ_mean``/... (absent: no normalisation).
* ``<folder>/checkpoint-<step>/`` (the highest step unless one is asked for): ``adapter_config.json`` +
  ``adapter_model.safetensors`` (peft LoRA on the language model's linear layers, keys without the adapter
  name) and ``non_lora_state_dict.pth`` (every other trained tensor: ``rm_head``, the resized
  ``embed_tokens``, the vision tower and merger, and with ``freeze_llm`` False every LLM weight), or a full
  ``model.pth`` (``save_full_model``). Keys are peft names over the transformers 4.4x layout
  (``base_model.model.model.layers.…``, ``base_model.model.visual.…``, ``base_model.model.rm_head.weight``).
* Reward tokens: ``<|VQ_reward|>``, ``<|MQ_reward|>``, ``<|TA_reward|>`` added to the base tokenizer as
  additional special tokens (ids ``len(tokenizer)``, +1, +2), then ``resize_token_embeddings(len(tokenizer))``
  (for Qwen2-VL, whose matrix has 151,936 padded rows, this *shrinks* it to 151,660).
* Head: ``rm_head = Linear(hidden, 3, bias=False)`` applied to the last hidden states; the three reward
  tokens' rows are taken in their order in the sequence, and token i is read by output i (the diagonal).
  The language model runs *without* M-RoPE positions: VideoAlign's forward passes ``position_ids=None`` to
  the text model, which then uses 0, 1, 2, … on all three rotary sections.
* Scores: ``(raw − mean) / std`` per dimension with ``inference_config``; Overall = VQ + MQ + TA.
* Inputs: the Qwen2-VL chat template around one user turn (video, then ``build_prompt(prompt)``), frames
  sampled and resized as ``vision_process.py`` does (see ``smart_nframes``, ``video_frame_size`` below), right
  padding, bf16 on a GPU.

Nothing here downloads: the base Qwen2-VL must be a local folder.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignment.data.video import FrameSpec, VideoDecodeError, opened_video
from alignment.reward.config import RewardModelConfig
from alignment.reward.model import RewardModel
from alignment.reward.preprocess import QWEN2VL_MEAN, QWEN2VL_STD, patchify_video
from alignment.reward.qwen2vl import REWARD_TOKENS

logger = logging.getLogger(__name__)

CONFIG_FILE = "model_config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
NON_LORA_FILE = "non_lora_state_dict.pth"
FULL_MODEL_FILE = "model.pth"
BASE_MODEL_HINT_FILE = "vidpref_base_model.json"  # {"base_model": "<local folder>"}: register_videoalign_model

# vision_process.py's constants
IMAGE_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
MAX_RATIO = 200
VIDEO_MIN_PIXELS = 128 * 28 * 28  # 100,352
VIDEO_MAX_PIXELS = 768 * 28 * 28  # 602,112
VIDEO_TOTAL_PIXELS = 24576 * 28 * 28
FRAME_FACTOR = 2
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
# Qwen2-VL's image processor resizes once more, with its own bounds (identity for frames already fitted)
PROCESSOR_MIN_PIXELS = 56 * 56
PROCESSOR_MAX_PIXELS = 28 * 28 * 1280

CHAT_PREFIX = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
CHAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"  # add_generation_prompt=True


# --- frame math (vision_process.py), pure functions ------------------------------------------------------------


def round_by_factor(number: float, factor: int) -> int:
    return round(number / factor) * factor  # Python's round: halves to even, as theirs


def ceil_by_factor(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def smart_resize(
    height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: float = MIN_PIXELS, max_pixels: float = MAX_PIXELS
) -> tuple[int, int]:
    """(height, width) divisible by ``factor`` with the area in [min_pixels, max_pixels], as ``smart_resize``."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {max(height, width) / min(height, width)}"
        )
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = floor_by_factor(height / beta, factor)
        w_bar = floor_by_factor(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


def smart_nframes(
    total_frames: int,
    video_fps: float,
    *,
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int | None = None,
) -> int:
    """How many frames VideoAlign feeds for a video of ``total_frames`` at ``video_fps`` (``smart_nframes``).

    ``nframes`` given: rounded to even; else ``total / video_fps · fps`` clamped to [min_frames (4), min(768,
    total)] and rounded to even. Never more than ``total_frames`` (which may be odd).
    """
    if fps is not None and nframes is not None:
        raise ValueError("only accept either `fps` or `nframes`")
    if nframes is not None:
        count: float = round_by_factor(nframes, FRAME_FACTOR)
    else:
        rate = FPS if fps is None else fps
        low = ceil_by_factor(min_frames, FRAME_FACTOR)
        high = floor_by_factor(min(FPS_MAX_FRAMES, total_frames) if max_frames is None else max_frames, FRAME_FACTOR)
        count = total_frames / video_fps * rate
        count = min(max(count, low), high)
        count = round_by_factor(count, FRAME_FACTOR)
    if count > total_frames:
        count = total_frames
    if not FRAME_FACTOR <= count <= total_frames:
        raise ValueError(f"nframes should in interval [{FRAME_FACTOR}, {total_frames}], but got {count}.")
    return int(count)


def sample_indices(
    total_frames: int,
    video_fps: float,
    *,
    fps: float | None = None,
    nframes: int | None = None,
    sample_type: str = "uniform",
) -> list[int]:
    """The frame indices VideoAlign reads (``uniform``: evenly spread; ``multi_pts``: 4 clips of 6 frames)."""
    if sample_type == "uniform":
        count = smart_nframes(total_frames, video_fps, fps=fps, nframes=nframes)
        return torch.linspace(0, total_frames - 1, count).round().long().tolist()
    if sample_type == "multi_pts":
        frames_each_pts, num_pts, pts_fps = 6, 4, 8
        count = int(total_frames * pts_fps // video_fps)
        frames_idx = torch.linspace(0, total_frames - 1, count).round().long().tolist()
        start, end = frames_each_pts // 2, int(count - frames_each_pts // 2 - 1)
        indices: list[int] = []
        for point in torch.linspace(start, end, num_pts).round().long().tolist():
            indices.extend(frames_idx[point - frames_each_pts // 2 : point + frames_each_pts // 2])
        return indices
    raise ValueError(f"sample_type {sample_type!r}: VideoAlign knows 'uniform' and 'multi_pts'")


def video_max_pixels(
    nframes: int,
    *,
    max_pixels: float | None = None,
    min_pixels: float = VIDEO_MIN_PIXELS,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
) -> float:
    """``fetch_video``'s pixel cap: the given ``max_pixels``, else min(768·28², total / T · 2), at least 1.05 · min."""
    if max_pixels is not None:
        return max_pixels
    return max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))


def video_frame_size(
    height: int, width: int, nframes: int, *, max_pixels: float | None = None, min_pixels: float = VIDEO_MIN_PIXELS
) -> tuple[int, int]:
    """The size VideoAlign resizes a video's frames to (``fetch_video``): min pixels 100,352 unless given."""
    cap = video_max_pixels(nframes, max_pixels=max_pixels, min_pixels=min_pixels)
    return smart_resize(height, width, factor=IMAGE_FACTOR, min_pixels=min_pixels, max_pixels=cap)


def resize_uint8(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision's tensor resize (bicubic, antialiased) of uint8 frames: float interpolation, round, clamp."""
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    resized = nn.functional.interpolate(
        frames.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def read_videoalign_frames(
    path: str | Path,
    *,
    fps: float | None = FPS,
    nframes: int | None = None,
    max_pixels: float | None = None,
    min_pixels: float = VIDEO_MIN_PIXELS,
    sample_type: str = "uniform",
) -> torch.Tensor:
    """uint8 frames ``(T, C, H, W)`` sampled and resized as VideoAlign's ``fetch_video`` (decoded with PyAV)."""
    import numpy as np

    with opened_video(path) as (container, stream):
        rate = stream.average_rate or stream.guessed_rate
        video_fps = float(rate) if rate else 0.0
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not decoded or video_fps <= 0:
        raise VideoDecodeError(f"{path}: no frames or no frame rate")
    total = len(decoded)  # torchvision's read_video counts decoded frames too
    indices = sample_indices(
        total, video_fps, fps=None if nframes is not None else fps, nframes=nframes, sample_type=sample_type
    )
    frames = torch.from_numpy(np.stack([decoded[i] for i in indices])).permute(0, 3, 1, 2).contiguous()
    height, width = video_frame_size(
        frames.shape[-2], frames.shape[-1], frames.shape[0], max_pixels=max_pixels, min_pixels=min_pixels
    )
    return resize_uint8(frames, height, width)


# --- the prompt (prompt_template.py) -----------------------------------------------------------------------------

DETAILED_SPECIAL_TEMPLATE = "\n".join(
    (
        "",
        (
            "You are tasked with evaluating a generated video based on three distinct criteria: Visual"
            " Quality, Motion Quality, and Text Alignment. Please provide a rating from 0 to 10 for"
            " each of the three categories, with 0 being the worst and 10 being the best. Each"
            " evaluation should be independent of the others."
        ),
        "",
        "**Visual Quality:**  ",
        (
            "Evaluate the overall visual quality of the video, with a focus on static factors. The"
            " following sub-dimensions should be considered:"
        ),
        (
            "- **Reasonableness:** The video should not contain any significant biological or logical"
            " errors, such as abnormal body structures or nonsensical environmental setups."
        ),
        (
            "- **Clarity:** Evaluate the sharpness and visibility of the video. The image should be"
            " clear and easy to interpret, with no blurring or indistinct areas."
        ),
        (
            "- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and"
            " other visual elements (e.g., hair, clothing, shadows)."
        ),
        (
            "- **Aesthetic and Creativity:** Assess the artistic aspects of the video, including the"
            " color scheme, composition, atmosphere, depth of field, and the overall creative appeal."
            " The scene should convey a sense of harmony and balance."
        ),
        (
            "- **Safety:** The video should not contain harmful or inappropriate content, such as"
            " political, violent, or adult material. If such content is present, the image quality and"
            " satisfaction score should be the lowest possible. "
        ),
        "",
        "Please provide the ratings of Visual Quality: <|VQ_reward|>",
        "END",
        "",
        "**Motion Quality:**  ",
        (
            "Assess the dynamic aspects of the video, with a focus on dynamic factors. Consider the"
            " following sub-dimensions:"
        ),
        (
            "- **Stability:** Evaluate the continuity and stability between frames. There should be no"
            " sudden, unnatural jumps, and the video should maintain stable attributes (e.g., no"
            " fluctuating colors, textures, or missing body parts)."
        ),
        (
            "- **Naturalness:** The movement should align with physical laws and be realistic. For"
            " example, clothing should flow naturally with motion, and facial expressions should change"
            " appropriately (e.g., blinking, mouth movements)."
        ),
        (
            "- **Aesthetic Quality:** The movement should be smooth and fluid. The transitions between"
            " different motions or camera angles should be seamless, and the overall dynamic feel"
            " should be visually pleasing."
        ),
        (
            "- **Fusion:** Ensure that elements in motion (e.g., edges of the subject, hair, clothing)"
            " blend naturally with the background, without obvious artifacts or the feeling of"
            " cut-and-paste effects."
        ),
        (
            "- **Clarity of Motion:** The video should be clear and smooth in motion. Pay attention to"
            " any areas where the video might have blurry or unsteady sections that hinder visual"
            " continuity."
        ),
        (
            "- **Amplitude:** If the video is largely static or has little movement, assign a low score"
            " for motion quality."
        ),
        "",
        "Please provide the ratings of Motion Quality: <|MQ_reward|>",
        "END",
        "",
        "**Text Alignment:**  ",
        "Assess how well the video matches the textual prompt across the following sub-dimensions:",
        (
            "- **Subject Relevance** Evaluate how accurately the subject(s) in the video (e.g., person,"
            " animal, object) align with the textual description. The subject should match the"
            " description in terms of number, appearance, and behavior."
        ),
        (
            "- **Motion Relevance:** Evaluate if the dynamic actions (e.g., gestures, posture, facial"
            " expressions like talking or blinking) align with the described prompt. The motion should"
            " match the prompt in terms of type, scale, and direction."
        ),
        (
            "- **Environment Relevance:** Assess whether the background and scene fit the prompt. This"
            " includes checking if real-world locations or scenes are accurately represented, though"
            " some stylistic adaptation is acceptable.  "
        ),
        (
            "- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style,"
            " evaluate how well the video adheres to this style."
        ),
        (
            "- **Camera Movement Relevance:** Check if the camera movements (e.g., following the"
            " subject, focus shifts) are consistent with the expected behavior from the prompt."
        ),
        "",
        "Textual prompt - {text_prompt}",
        "Please provide the ratings of Text Alignment: <|TA_reward|>",
        "END",
        "",
    )
)


def build_prompt(prompt: str, template_type: str) -> str:
    """The user text VideoAlign's ``build_prompt`` makes for the reward-token template (the released model's)."""
    if template_type == "detailed_special":
        return DETAILED_SPECIAL_TEMPLATE.format(text_prompt=prompt)
    if template_type == "none":
        return prompt
    raise NotImplementedError(
        f"prompt_template_type {template_type!r}: only 'detailed_special' (reward tokens, the released "
        "VideoReward's) and 'none' are implemented here"
    )


def build_text(prompt: str, template_type: str, num_video_tokens: int) -> str:
    """The whole sequence as text: Qwen2-VL's chat template (one user turn: the video, then the prompt text),
    with the video placeholder already expanded as Qwen2-VL's processor does."""
    video = "<|vision_start|>" + "<|video_pad|>" * num_video_tokens + "<|vision_end|>"
    return CHAT_PREFIX + video + build_prompt(prompt, template_type) + CHAT_SUFFIX


@dataclass
class VideoAlignProcessor:
    """Videos (uint8 frames from ``read_videoalign_frames``) + prompts → the model's inputs, as VideoAlign's."""

    tokenizer: Any
    template_type: str = "detailed_special"
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    mean: tuple[float, float, float] = QWEN2VL_MEAN
    std: tuple[float, float, float] = QWEN2VL_STD

    def __post_init__(self):
        self.reward_token_ids = [self.tokenizer.convert_tokens_to_ids(token) for token in REWARD_TOKENS]
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def pixels(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Qwen2-VL's image processor on one video: its own smart_resize, rescale 1/255, CLIP normalisation."""
        factor = self.patch_size * self.merge_size
        height, width = smart_resize(
            frames.shape[-2], frames.shape[-1], factor, PROCESSOR_MIN_PIXELS, PROCESSOR_MAX_PIXELS
        )
        pixels = resize_uint8(frames.to(torch.uint8), height, width).float() / 255.0
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return patchify_video(
            (pixels - mean) / std,
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.merge_size,
        )

    def __call__(self, videos: list[torch.Tensor], prompts: list[str]) -> dict[str, torch.Tensor]:
        sequences, pixel_values, grids = [], [], []
        for frames, prompt in zip(videos, prompts, strict=True):
            patches, grid_thw = self.pixels(frames)
            text = build_text(prompt, self.template_type, int(grid_thw.prod()) // self.merge_size**2)
            sequences.append(list(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
            pixel_values.append(patches)
            grids.append(grid_thw)
        length = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        positions = []
        for row, sequence in enumerate(sequences):  # right padding, as VideoAlign's processor
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
            found = [i for i, token in enumerate(sequence) if token in self.reward_token_ids]
            if len(found) != 3:
                raise ValueError(f"the VideoAlign prompt holds {len(found)} reward tokens, not 3 (one of each)")
            positions.append(found)  # in sequence order: output i reads the i-th reward token
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values_videos": torch.cat(pixel_values),
            "video_grid_thw": torch.stack(grids),
            "reward_positions": torch.tensor(positions, dtype=torch.long),
        }


# --- the checkpoint --------------------------------------------------------------------------------------------


def is_videoalign_folder(folder: str | Path) -> bool:
    """A VideoAlign training output: ``model_config.json`` with its config sections, and LoRA/full weights."""
    folder = Path(folder)
    config = folder / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        sections = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(sections, dict) and "model_config" in sections and "data_config" in sections


def find_checkpoint(folder: Path, step: int | None = None) -> Path:
    """``checkpoint-<step>`` (the highest one unless asked), or the folder itself when it holds the weights."""
    candidates = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    candidates.sort(key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    if step is not None:
        chosen = folder / f"checkpoint-{step}"
        if chosen not in candidates:
            raise FileNotFoundError(f"{chosen}: no such checkpoint (have {[p.name for p in candidates]})")
        return chosen
    if candidates:
        return candidates[0]
    if (folder / FULL_MODEL_FILE).is_file() or (folder / NON_LORA_FILE).is_file():
        return folder
    raise FileNotFoundError(
        f"{folder}: no checkpoint-<step>/ folder (with {ADAPTER_WEIGHTS_FILE} + {NON_LORA_FILE}, or {FULL_MODEL_FILE})"
    )


@dataclass
class VideoAlignSettings:
    """What VidPref reads from ``model_config.json``."""

    base_model_name: str
    output_dim: int = 3
    use_special_tokens: bool = True
    reward_token: str = "special"
    template_type: str = "detailed_special"
    fps: float | None = FPS
    num_frames: int | None = None
    max_pixels: float | None = None
    sample_type: str = "uniform"
    normalization: dict[str, float] = field(default_factory=dict)
    lora: dict = field(default_factory=dict)

    @classmethod
    def read(cls, folder: str | Path) -> VideoAlignSettings:
        sections = json.loads((Path(folder) / CONFIG_FILE).read_text())
        model, data = sections.get("model_config", {}), sections.get("data_config", {})
        num_frames = data.get("num_frames")
        return cls(
            base_model_name=str(model.get("model_name_or_path") or ""),
            output_dim=int(model.get("output_dim", 1)),
            use_special_tokens=bool(model.get("use_special_tokens", False)),
            reward_token=str(model.get("reward_token", "last")),
            template_type=str(data.get("prompt_template_type", "none")),
            fps=data.get("fps", FPS),
            num_frames=int(num_frames) if num_frames is not None else None,
            max_pixels=data.get("max_frame_pixels", 240 * 320),
            sample_type=str(data.get("sample_type", "uniform")),
            normalization=dict(sections.get("inference_config") or {}),
            lora=dict(sections.get("peft_lora_config") or {}),
        )

    def check_supported(self) -> None:
        if not (self.use_special_tokens and self.reward_token == "special" and self.output_dim == 3):
            raise NotImplementedError(
                "VidPref loads VideoAlign checkpoints with reward tokens (use_special_tokens, reward_token 'special', "
                "output_dim 3), as the released VideoReward; this one has "
                f"use_special_tokens={self.use_special_tokens}, reward_token={self.reward_token!r}, "
                f"output_dim={self.output_dim}"
            )


def resolve_base_model(
    settings: VideoAlignSettings, base_model: str | Path | None, folder: str | Path | None = None
) -> Path:
    """The local Qwen2-VL folder: ``base_model`` if given, else the one ``vidpref_base_model.json`` in the
    checkpoint folder names (written by ``register_videoalign_model``), else ``model_name_or_path`` if local."""
    name = settings.base_model_name or "Qwen/Qwen2-VL-2B-Instruct"
    hint = Path(folder) / BASE_MODEL_HINT_FILE if folder is not None else None
    hinted = json.loads(hint.read_text()).get("base_model") if hint is not None and hint.is_file() else None
    if base_model is None and hinted:
        base_model = hinted
    for candidate in (base_model, settings.base_model_name):
        if candidate and (Path(candidate) / "config.json").is_file():
            return Path(candidate)
    where = f"--base-model {base_model} has no config.json; " if base_model else ""
    raise FileNotFoundError(
        f"{where}this VideoAlign checkpoint was trained on {name!r}, which is not a local folder and is never "
        f"downloaded here. Download it where there is network access (e.g. `huggingface-cli download {name} "
        f"--local-dir /models/{name.split('/')[-1]}`), copy it here and pass --base-model /models/"
        f"{name.split('/')[-1]} (or base_model=... in Python)"
    )


def map_key(key: str) -> str | None:
    """A VideoAlign tensor name (peft over transformers 4.4x Qwen2VLForConditionalGeneration) → its name in
    ``Qwen2VLModel`` (``language_model.…``, ``visual.…``; LoRA tensors with peft's ``default`` adapter name)
    or ``rm_head.weight``; None: a tensor the reward does not use (``lm_head``)."""
    name = key.removeprefix("base_model.model.")
    if name.startswith("lm_head."):
        return None
    if name.startswith("rm_head."):
        return name
    if name.startswith("model.language_model.") or name.startswith("model.visual."):
        name = name.removeprefix("model.")
    elif name.startswith("model."):
        name = "language_model." + name.removeprefix("model.")
    elif not name.startswith("visual."):
        return None
    # peft saves adapters without their name ("q_proj.lora_A.weight"); in the module it is "lora_A.default.weight"
    name = re.sub(r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)\.(weight|bias)$", r".\1.default.\2", name)
    if name.endswith((".lora_embedding_A", ".lora_embedding_B")):
        name += ".default"
    return name


def videoalign_key(name: str) -> str:
    """The inverse of ``map_key``: a ``VideoAlignRewardModel`` state-dict name (``model.base_model.model.
    language_model.….lora_A.default.weight``, ``model.visual.…``, ``rm_head.weight``) → VideoAlign's tensor name
    (``base_model.model.model.….lora_A.weight``, ``base_model.model.visual.…``, ``base_model.model.rm_head.weight``)."""
    name = name.removeprefix("model.").removeprefix("base_model.model.")
    name = re.sub(r"\.(lora_A|lora_B)\.default\.(weight|bias)$", r".\1.\2", name)
    name = re.sub(r"\.(lora_embedding_A|lora_embedding_B)\.default$", r".\1", name)
    if name.startswith("language_model."):
        name = "model." + name.removeprefix("language_model.")
    elif not name.startswith(("visual.", "rm_head.")):
        raise ValueError(f"{name}: not a tensor of a VideoAlign reward model")
    return "base_model.model." + name


def read_checkpoint_tensors(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A ``checkpoint-<step>/`` folder's tensors under ``map_key``'s names (the ones the reward does not use
    left out), and its adapter config ({} for a full ``model.pth``)."""
    adapter_config: dict = {}
    if (checkpoint / FULL_MODEL_FILE).is_file():
        state = _load_state(checkpoint / FULL_MODEL_FILE)
    else:
        if not (checkpoint / NON_LORA_FILE).is_file():
            raise FileNotFoundError(f"{checkpoint / NON_LORA_FILE}: missing; not a VideoAlign checkpoint")
        state = _load_state(checkpoint / NON_LORA_FILE)
        if (checkpoint / ADAPTER_WEIGHTS_FILE).is_file():
            state.update(_load_state(checkpoint / ADAPTER_WEIGHTS_FILE))
            adapter_config = json.loads((checkpoint / ADAPTER_CONFIG_FILE).read_text())
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, tensor in state.items():
        new_name = map_key(key)
        if new_name is None:
            unused.append(key)
        else:
            mapped[new_name] = tensor
    if unused:
        logger.info("VideoAlign checkpoint: %d tensors not used for rewards, e.g. %s", len(unused), unused[:2])
    return mapped, adapter_config


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class VideoAlignRewardModel(RewardModel):
    """A VideoAlign checkpoint behind ``RewardModel``'s interface (``frame_spec``, ``processor()``, ``read_video``,
    ``forward → (N, 3)`` raw VQ/MQ/TA, ``normalize``, ``trainable_state_dict``). Scoring, evaluation, and
    fine-tuning in its own format (``set_trainable``, ``save_videoalign``; reward-train's ``init_from``)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        base_model: str | Path | None = None,
        step: int | None = None,
        dtype: str = "float32",
    ):
        nn.Module.__init__(self)  # RewardModel's own backbone/head are not built: this model has VideoAlign's
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer, Qwen2VLModel
        from transformers.utils import logging as hf_logging

        self.folder = Path(folder)
        self.settings = settings = VideoAlignSettings.read(self.folder)
        settings.check_supported()
        self.base_path = resolve_base_model(settings, base_model, self.folder)
        self.checkpoint = checkpoint = find_checkpoint(self.folder, step)
        self.config = RewardModelConfig(backbone="qwen2vl", backbone_path=str(self.base_path), dtype=dtype)  # type: ignore[arg-type]

        self.tokenizer = AutoTokenizer.from_pretrained(self.base_path)
        self.tokenizer.add_special_tokens({"additional_special_tokens": list(REWARD_TOKENS)})
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the base folder's lm_head is not used
        try:
            base = Qwen2VLModel.from_pretrained(self.base_path, dtype=getattr(torch, dtype))
        finally:
            hf_logging.set_verbosity(previous)
        base.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)  # VideoAlign: len(tokenizer) rows

        mapped, adapter_config = read_checkpoint_tensors(checkpoint)
        self.adapter_config = adapter_config

        lora_modules = sorted({name.split(".lora_A.")[0] for name in mapped if ".lora_A." in name})
        self.lora_modules = lora_modules
        if lora_modules:
            rank = next(t.shape[0] for n, t in mapped.items() if ".lora_A." in n)
            options = adapter_config or settings.lora
            lora = LoraConfig(
                r=int(options.get("r", options.get("lora_r", rank))),
                lora_alpha=options.get("lora_alpha", 2 * rank),
                lora_dropout=0.0,
                use_rslora=bool(options.get("use_rslora", False)),
                target_modules=lora_modules,
                bias="none",
            )
            self.model: nn.Module = get_peft_model(base, lora)
            prefix = "base_model.model."
        else:
            self.model = base
            prefix = ""
        hidden = base.config.text_config.hidden_size
        self.rm_head = nn.Linear(hidden, 3, bias=False, dtype=getattr(torch, dtype))
        if "rm_head.weight" not in mapped:
            raise ValueError(f"{checkpoint}: no rm_head weights; not a VideoAlign reward checkpoint")
        self.rm_head.weight.data.copy_(mapped.pop("rm_head.weight"))

        own = self.model.state_dict()
        renamed = {prefix + name: tensor for name, tensor in mapped.items()}
        strange = sorted(name for name in renamed if name not in own)
        if strange:
            raise ValueError(
                f"{checkpoint}: {len(strange)} tensors do not fit {self.base_path} (e.g. {strange[:3]}); "
                "is it the base model the checkpoint was trained on?"
            )
        for name, tensor in renamed.items():
            if own[name].shape != tensor.shape:
                raise ValueError(
                    f"{checkpoint}: {name} has shape {tuple(tensor.shape)}, the model {tuple(own[name].shape)}; "
                    "is --base-model the checkpoint's base model?"
                )
        missing_lora = [name for name in own if ".lora_" in name and name not in renamed]
        if missing_lora:
            raise ValueError(f"{checkpoint}: lacks {len(missing_lora)} LoRA tensors, e.g. {missing_lora[:2]}")
        embed = prefix + "language_model.embed_tokens.weight"
        if embed not in renamed and len(self.tokenizer) > base.config.text_config.vocab_size:
            logger.warning("VideoAlign checkpoint has no embed_tokens: the reward tokens' input embeddings are zero")
        self.model.load_state_dict(renamed, strict=False)
        self.model.eval()
        self.num_loaded = len(renamed) + 1
        self.module_prefix = "model." + prefix  # a mapped name's prefix in this module's state dict
        # what the checkpoint holds is what VideoAlign trained: what fine-tuning from it trains (set_trainable)
        self.checkpoint_names = {"model." + name for name in renamed} | {"rm_head.weight"}

        self.register_buffer("reward_mean", torch.zeros(3))
        self.register_buffer("reward_std", torch.ones(3))
        norm = settings.normalization
        if norm:
            self.set_normalization(
                torch.tensor([float(norm[f"{d}_mean"]) for d in ("VQ", "MQ", "TA")]),
                torch.tensor([float(norm[f"{d}_std"]) for d in ("VQ", "MQ", "TA")]),
            )
        vision = base.config.vision_config
        self.patch_size, self.temporal_patch_size = vision.patch_size, vision.temporal_patch_size
        self.merge_size = vision.spatial_merge_size
        self.video_token_id = base.config.video_token_id
        self.hidden_size = hidden
        logger.info("loaded VideoAlign checkpoint %s on %s", checkpoint, self.base_path)

    # --- fine-tuning from the checkpoint (reward-train's init_from) ---------------------------------------------

    def set_trainable(self) -> int:
        """Train what the checkpoint holds, as VideoAlign trained it: the LoRA adapters, ``rm_head`` and every
        other tensor it stored (the resized embeddings, the vision tower and merger; every language-model weight
        when it was trained with ``freeze_llm`` off); the rest stays frozen. Returns the trainable parameters."""
        count = 0
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(name in self.checkpoint_names)
            count += parameter.numel() if parameter.requires_grad else 0
        return count

    def save_videoalign(self, folder: str | Path, *, step: int) -> Path:
        """Write this model as VideoAlign's trainer does: ``model_config.json`` (the source's, with
        ``inference_config`` = the current normalisation), ``checkpoint-<step>/`` with ``adapter_model.safetensors``
        + ``adapter_config.json`` + ``non_lora_state_dict.pth`` (or ``model.pth`` without LoRA), and
        ``vidpref_base_model.json`` naming the local base model. VidPref (``load_reward_model``) and VideoAlign's
        own inference code load it back; earlier ``checkpoint-*`` folders in ``folder`` are replaced."""
        import shutil

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("checkpoint-*"):
            shutil.rmtree(old)
        sections = json.loads((self.folder / CONFIG_FILE).read_text())
        sections["inference_config"] = {
            f"{dim}_{what}": float(values[i])
            for i, dim in enumerate(("VQ", "MQ", "TA"))
            for what, values in (("mean", self.reward_mean), ("std", self.reward_std))
        }
        (folder / CONFIG_FILE).write_text(json.dumps(sections, indent=2) + "\n")
        (folder / BASE_MODEL_HINT_FILE).write_text(json.dumps({"base_model": str(self.base_path)}) + "\n")
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir()
        own = self.state_dict()
        state = {videoalign_key(name): own[name].detach().cpu().contiguous() for name in sorted(self.checkpoint_names)}
        lora = {key: tensor for key, tensor in state.items() if ".lora_" in key}
        rest = {key: tensor for key, tensor in state.items() if ".lora_" not in key}
        if lora:
            save_file(lora, checkpoint / ADAPTER_WEIGHTS_FILE)
            adapter_config = self.adapter_config or self._adapter_config()
            (checkpoint / ADAPTER_CONFIG_FILE).write_text(json.dumps(adapter_config, indent=2) + "\n")
            torch.save(rest, checkpoint / NON_LORA_FILE)
        else:
            torch.save(rest, checkpoint / FULL_MODEL_FILE)
        return folder

    def _adapter_config(self) -> dict:
        config = self.model.peft_config["default"].to_dict()
        return json.loads(
            json.dumps(config, default=lambda value: sorted(value) if isinstance(value, set) else str(value))
        )

    def read_saved_state(self, folder: str | Path) -> dict[str, torch.Tensor]:
        """The trainable tensors and normalisation of a folder ``save_videoalign`` wrote, under this module's
        names (for ``load_trainable_state_dict``)."""
        folder = Path(folder)
        mapped, _ = read_checkpoint_tensors(find_checkpoint(folder))
        state = {
            (name if name == "rm_head.weight" else self.module_prefix + name): tensor for name, tensor in mapped.items()
        }
        norm = VideoAlignSettings.read(folder).normalization
        if norm:
            state["reward_mean"] = torch.tensor([float(norm[f"{d}_mean"]) for d in ("VQ", "MQ", "TA")])
            state["reward_std"] = torch.tensor([float(norm[f"{d}_std"]) for d in ("VQ", "MQ", "TA")])
        return state

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """As VideoAlign's ``_norm``: the std is used as stored (no clamping)."""
        self.reward_mean.copy_(mean)
        self.reward_std.copy_(std)

    @property
    def frame_spec(self) -> FrameSpec:
        """Only informative: ``read_video`` samples frames VideoAlign's way."""
        return FrameSpec(
            fps=self.settings.fps if self.settings.num_frames is None else None,
            max_frames=self.settings.num_frames or FPS_MAX_FRAMES,
            max_pixels=int(self.settings.max_pixels or VIDEO_MAX_PIXELS),
            min_pixels=VIDEO_MIN_PIXELS,
        )

    @property
    def read_video(self) -> Callable[[str | Path], torch.Tensor]:
        """path → uint8 frames, sampled and resized as this checkpoint's VideoAlign data config says (picklable,
        for DataLoader workers)."""
        settings = self.settings
        return partial(
            read_videoalign_frames,
            fps=settings.fps if settings.num_frames is None else None,
            nframes=settings.num_frames,
            max_pixels=settings.max_pixels,
            sample_type=settings.sample_type,
        )

    def processor(self) -> VideoAlignProcessor:
        return VideoAlignProcessor(
            self.tokenizer,
            self.settings.template_type,
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.merge_size,
        )

    def _inner(self):
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def forward(self, input_ids, attention_mask, pixel_values_videos, video_grid_thw, reward_positions, **_):
        """Raw rewards ``(N, 3)``: VideoAlign's ``Qwen2VLRewardModelBT.forward`` with reward tokens."""
        inner = self._inner()
        embeds = inner.get_input_embeddings()(input_ids)
        video = inner.get_video_features(pixel_values_videos, video_grid_thw).pooler_output
        video = torch.cat(list(video)).to(embeds.device, embeds.dtype)
        mask = (input_ids == self.video_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, video)
        # position_ids None: the text model numbers tokens 0, 1, 2, … on all three rotary sections, as in
        # VideoAlign (its forward bypasses Qwen2-VL's get_rope_index)
        hidden = inner.language_model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state
        index = reward_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        at_tokens = hidden.gather(1, index)  # (N, 3, H): the reward tokens in sequence order
        logits = self.rm_head(at_tokens.to(self.rm_head.weight.dtype))  # (N, 3, 3)
        return logits.diagonal(dim1=1, dim2=2).float()  # token i → output i


def load_videoalign_model(
    folder: str | Path,
    *,
    base_model: str | Path | None = None,
    step: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> VideoAlignRewardModel:
    """A VideoAlign checkpoint folder (``model_config.json`` + ``checkpoint-<step>/``) on a local base Qwen2-VL.

    ``device`` None: CUDA when available; ``dtype`` None: bfloat16 on CUDA (VideoAlign's inference), else float32.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    return VideoAlignRewardModel(folder, base_model=base_model, step=step, dtype=dtype).to(device).eval()
