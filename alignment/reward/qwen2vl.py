"""VideoReward's backbone: Qwen2-VL from a local folder, read at three reward tokens.

The prompt places ``<|VQ_reward|>`` and ``<|MQ_reward|>`` after the video but *before* the text
prompt, so under causal attention their hidden states cannot depend on the prompt (visual and motion
quality are context-agnostic), and ``<|TA_reward|>`` after the prompt (text alignment needs it).
LoRA adapts the language model; the vision tower stays fully trainable (paper, §4).

The three reward tokens get their own trainable input embeddings (a ``(3, hidden)`` parameter)
instead of new rows in the 150k-row embedding matrix, so the matrix stays frozen under LoRA and
the checkpoint holds only what was trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignment.data.video import FrameSpec
from alignment.reward.preprocess import Qwen2VLVideoPreprocessor

REWARD_TOKENS = ("<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>")
VIDEO_PLACEHOLDER = "{video}"
PROMPT_PLACEHOLDER = "{prompt}"

DEFAULT_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{video}"
    "Rate this generated video on three separate criteria.\n"
    "Visual quality (clarity, detail, aesthetics and plausibility of each frame): <|VQ_reward|>\n"
    "Motion quality (stability, naturalness, smoothness and amount of motion): <|MQ_reward|>\n"
    "Text prompt: {prompt}\n"
    "Text alignment with the prompt (subjects, actions, scene, style and camera): <|TA_reward|>"
    "<|im_end|>\n<|im_start|>assistant\n"
)


def _check_template(template: str) -> None:
    positions = [
        template.find(token) for token in (VIDEO_PLACEHOLDER, *REWARD_TOKENS[:2], PROMPT_PLACEHOLDER, REWARD_TOKENS[2])
    ]
    if min(positions) < 0 or positions != sorted(positions):
        raise ValueError(
            "the reward prompt template must contain, in this order: {video}, <|VQ_reward|>, <|MQ_reward|>, "
            "{prompt}, <|TA_reward|> (VQ and MQ are read before the prompt text, TA after it)"
        )


@dataclass
class Qwen2VLRewardProcessor:
    """Videos + prompts → the Qwen2-VL inputs of a batch (picklable; runs in DataLoader workers)."""

    tokenizer: Any  # a transformers tokenizer
    video_preprocessor: Qwen2VLVideoPreprocessor
    template: str = DEFAULT_TEMPLATE
    max_prompt_tokens: int = 256

    def __post_init__(self):
        _check_template(self.template)
        ids = self.tokenizer.convert_tokens_to_ids
        self.video_token_id = ids("<|video_pad|>")
        self.vision_start_id = ids("<|vision_start|>")
        self.vision_end_id = ids("<|vision_end|>")
        self.reward_token_ids = [ids(token) for token in REWARD_TOKENS]
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        before_video, after_video = self.template.split(VIDEO_PLACEHOLDER)
        before_prompt, after_prompt = after_video.split(PROMPT_PLACEHOLDER)
        self._head = self._encode(before_video) + [self.vision_start_id]
        self._middle = [self.vision_end_id] + self._encode(before_prompt)
        self._tail = self._encode(after_prompt)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, videos: list[torch.Tensor], prompts: list[str]) -> dict[str, torch.Tensor]:
        sequences, pixel_values, grids = [], [], []
        for frames, prompt in zip(videos, prompts, strict=True):
            patches, grid_thw = self.video_preprocessor(frames)
            prompt_ids = self._encode(prompt)[: self.max_prompt_tokens]
            video_ids = [self.video_token_id] * self.video_preprocessor.num_video_tokens(grid_thw)
            sequences.append(self._head + video_ids + self._middle + prompt_ids + self._tail)
            pixel_values.append(patches)
            grids.append(grid_thw)
        length = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):  # right padding: reward positions stay put
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
        reward_positions = torch.stack(
            [(input_ids == token_id).float().argmax(dim=1) for token_id in self.reward_token_ids], dim=1
        )  # (N, 3)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": (input_ids == self.video_token_id).int() * 2,  # 0 text, 2 video
            "pixel_values_videos": torch.cat(pixel_values),
            "video_grid_thw": torch.stack(grids),
            "reward_positions": reward_positions,
        }


class Qwen2VLRewardBackbone(nn.Module):
    """Qwen2-VL (``Qwen2VLModel``, no LM head) returning the hidden states at the reward tokens."""

    def __init__(
        self,
        path: str | Path,
        *,
        lora_rank: int = 64,
        lora_alpha: int = 128,
        lora_dropout: float = 0.05,
        train_vision_tower: bool = True,
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        fps: float | None = 2.0,
        max_frames: int = 32,
        max_pixels: int = 448 * 448,
        min_pixels: int = 56 * 56,
        template: str = DEFAULT_TEMPLATE,
        max_prompt_tokens: int = 256,
    ):
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import AutoTokenizer, Qwen2VLModel
        from transformers.utils import logging as hf_logging

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json; reward backbones load from a local model folder")
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a ForConditionalGeneration folder has an lm_head we do not use
        try:
            base = Qwen2VLModel.from_pretrained(path, dtype=getattr(torch, dtype))
        finally:
            hf_logging.set_verbosity(previous)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        missing = [token for token in REWARD_TOKENS if token not in self.tokenizer.get_vocab()]
        if missing:
            self.tokenizer.add_tokens(missing, special_tokens=True)
        self.reward_token_ids = [self.tokenizer.convert_tokens_to_ids(token) for token in REWARD_TOKENS]
        vision = base.config.vision_config
        self.video_preprocessor = Qwen2VLVideoPreprocessor(
            patch_size=vision.patch_size,
            temporal_patch_size=vision.temporal_patch_size,
            merge_size=vision.spatial_merge_size,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
        self.template = template
        self.max_prompt_tokens = max_prompt_tokens
        self.frame_spec = FrameSpec(
            fps=fps,
            max_frames=max_frames,
            max_pixels=max_pixels,
            min_pixels=min_pixels,
            size_factor=vision.patch_size * vision.spatial_merge_size,
            frame_multiple=vision.temporal_patch_size,
        )
        self.hidden_size = base.config.text_config.hidden_size

        embeddings = base.get_input_embeddings().weight.detach().float()
        generator = torch.Generator().manual_seed(0)
        init = embeddings.mean(0) + embeddings.std(0) * 0.1 * torch.randn(3, embeddings.shape[1], generator=generator)
        self.reward_token_embeddings = nn.Parameter(
            init.to(embeddings.dtype if dtype == "float32" else getattr(torch, dtype))
        )
        self.vocab_rows = embeddings.shape[0]

        if gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora_rank > 0:
            lora = LoraConfig(
                r=lora_rank,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
            )
            self.model = get_peft_model(base, lora)
        else:
            self.model = base
            for parameter in base.language_model.parameters():
                parameter.requires_grad_(False)
        for parameter in self._inner().visual.parameters():
            parameter.requires_grad_(train_vision_tower)
        logging.getLogger(__name__).info("loaded Qwen2-VL backbone from %s", path)

    def _inner(self):
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def processor(self) -> Qwen2VLRewardProcessor:
        return Qwen2VLRewardProcessor(self.tokenizer, self.video_preprocessor, self.template, self.max_prompt_tokens)

    def forward(
        self, input_ids, attention_mask, mm_token_type_ids, pixel_values_videos, video_grid_thw, reward_positions
    ) -> torch.Tensor:
        """→ hidden states ``(N, 3, hidden)`` at the VQ, MQ and TA tokens."""
        inner = self._inner()
        lookup_ids = input_ids.masked_fill(input_ids >= self.vocab_rows, 0)  # added tokens have no matrix row
        inputs_embeds = inner.get_input_embeddings()(lookup_ids)  # (N, L, H)
        for index, token_id in enumerate(self.reward_token_ids):
            is_token = (input_ids == token_id).unsqueeze(-1)
            inputs_embeds = torch.where(
                is_token, self.reward_token_embeddings[index].to(inputs_embeds.dtype), inputs_embeds
            )
        outputs = self.model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            mm_token_type_ids=mm_token_type_ids,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw,
            use_cache=False,
        )
        hidden = outputs.last_hidden_state  # (N, L, H)
        index = reward_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return hidden.gather(1, index)  # (N, 3, H)
