"""Data: the LoRA keys ComfyUI's loader maps, per model family, for diffusion-pipe's formats.

Facts read from `pollockjj/ComfyUI`, upstream commit 3cd7b32f1b7e7e90395cefe7d9f9b1f89276d8ce
("Support gemma 12B with quant weights. (#11696)", v0.8.0+2). The fork's HEAD there,
618b803d314a525faca8f8163d85eaa9ebc1d774 (a merge of upstream/master), has the same tree
(195f4391...), so both commits give the same line numbers. CAVEAT: diffusion-pipe's ComfyUI
submodule pins 9a9fdb10ed144ce760d9682cb247526ea23cc525, which was not available; these are the
facts of 3cd7b32f, not of 9a9fdb1. No ComfyUI code is copied here, only names and offsets.

Sources (paths in ComfyUI, lines at 3cd7b32f):

- comfy/sd.py:72-100 `load_lora_for_models`: key map = `model_lora_keys_unet` (75) then
  `model_lora_keys_clip` (77); `comfy.lora_convert.convert_lora` (79); `load_lora` (80).
- comfy/lora_convert.py:36-43 `convert_lora`: rewrites only BFL Flux control LoRAs, Wan "Fun"
  LoRAs (`lora_unet__` double underscore) and USO LoRAs; none of diffusion-pipe's formats.
- comfy/lora.py:37-95 `load_lora`; 97-173 `model_lora_keys_clip`; 175-333 `model_lora_keys_unet`.
- comfy/weight_adapter/lora.py:81-130 `LoRAAdapter.load`: the tensor suffixes tried per key.
- comfy/model_patcher.py:557-579 `add_patches`: a (weight, offset) target is narrowed there.
- comfy/utils.py:202-334 `unet_to_diffusers`; 573-677 `flux_to_diffusers`;
  679-743 `z_image_to_diffusers`.
- Model definitions: comfy/ldm/flux/layers.py, comfy/ldm/flux/model.py, comfy/ldm/wan/model.py,
  comfy/ldm/qwen_image/model.py, comfy/ldm/lumina/model.py,
  comfy/ldm/modules/diffusionmodules/openaimodel.py, comfy/ldm/modules/attention.py,
  comfy/sdxl_clip.py, comfy/sd1_clip.py, comfy/clip_model.py; sizes from
  comfy/model_detection.py and comfy/supported_models.py.

What the loader does with keys it does not match (comfy/lora.py:90-93): `load_lora` is called
with `log_missing=True` (the default, lora.py:37; sd.py:80), and every key of the LoRA file not
consumed by a mapped module (its `lora_A/lora_B`, `lora_down/lora_up`, `.alpha`, `.dora_scale`,
...) is logged as `logging.warning("lora key not loaded: {}")` (lora.py:93) and then dropped;
loading is not refused and the matched keys still apply. A second warning, `NOT LOADED {}`
(sd.py:96-98), names mapped targets whose weight is in neither the model's nor the CLIP's state
dict (`add_patches` keeps only keys in the model state dict, model_patcher.py:572).

Conventions of the tables below:

- `{i}` stands for a block index (fill it with `str.format(i=...)`).
- MODEL_WEIGHTS for unet families: the ComfyUI weight as `diffusion_model.<name>.weight` with
  `diffusion_model.` and `.weight` stripped. For CLIP (sdxl_te1, sdxl_te2): the key of
  `clip.cond_stage_model.state_dict()` (lora.py:98), i.e. `clip_l.transformer.<HF name>` /
  `clip_g.transformer.<HF name>` without `.weight`; model_lora_keys_clip maps to these names
  with no further prefix (lora.py:111, 121, 132).
- LORA_ALIASES[family][model weight]: the LoRA module keys (no `.lora_A.weight` etc.) in the
  format diffusion-pipe writes that ComfyUI maps onto that weight. `slice` is set where ComfyUI
  maps the key to a part of a fused weight, as `weight.narrow(dim, start, length)`
  (lora.py:382 via model_patcher.py:567-575), with start and length in units of
  SLICE_UNIT[family].
"""

from __future__ import annotations

from dataclasses import dataclass

COMFY_REPO: str = "pollockjj/ComfyUI"
COMFY_COMMIT: str = "3cd7b32f1b7e7e90395cefe7d9f9b1f89276d8ce"
# The fork's HEAD at reading time; same tree as COMFY_COMMIT.
COMFY_FORK_HEAD: str = "618b803d314a525faca8f8163d85eaa9ebc1d774"
# What diffusion-pipe's submodule pins; not the commit read.
DIFFUSION_PIPE_COMFY_PIN: str = "9a9fdb10ed144ce760d9682cb247526ea23cc525"

FAMILIES: tuple[str, ...] = (
    "flux",
    "sdxl_unet",
    "sdxl_te1",
    "sdxl_te2",
    "wan_t2v",
    "wan_i2v",
    "qwen_image",
    "z_image",
)


@dataclass(frozen=True)
class Slice:
    """`weight.narrow(dim, start * unit, length * unit)`, unit = SLICE_UNIT[family]."""

    dim: int
    start: int
    length: int


@dataclass(frozen=True)
class LoraAlias:
    """A LoRA module key ComfyUI maps onto a model weight, whole or (with `slice`) a part."""

    key: str
    slice: Slice | None = None


# The unit of the slices: Flux `hidden_size` (3072 for Flux.1: model_detection.py:218, or
# img_in.weight.shape[0] at 226; used by flux_to_diffusers at utils.py:576 and lora.py:264);
# Z-Image `dim` (cap_embedder.1.weight.shape[0], model_detection.py:420; 3840 at 436;
# used by z_image_to_diffusers at utils.py:681).
SLICE_UNIT: dict[str, int] = {"flux": 3072, "z_image": 3840}

# Tensor suffixes after the module key (comfy/weight_adapter/lora.py:93-128; alpha and dora
# scale at comfy/lora.py:41-51). diffusion-pipe's PEFT files use "peft", its SDXL kohya files
# "kohya".
ADAPTER_SUFFIXES: dict[str, tuple[str, ...]] = {
    "peft": (".lora_A.weight", ".lora_B.weight"),  # lora.py:95, 110-112 ("diffusers2")
    "kohya": (".lora_down.weight", ".lora_up.weight", ".alpha"),  # lora.py:93, 102-104
}

# SDXL prefixes of the transformer blocks of input_blocks.4.1 = down_blocks.1.attentions.0:
# ComfyUI (LDM) names and kohya keys (used in LORA_ALIASES["sdxl_unet"]).
_SDXL_LDM_TB = "input_blocks.4.1.transformer_blocks.{i}."
_SDXL_TB = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_{i}_"

_Q = Slice(0, 0, 1)
_K = Slice(0, 1, 1)
_V = Slice(0, 2, 1)

# ---------------------------------------------------------------------------------------------
# Model weights: every nn.Linear of one block, from the model definitions.
# ---------------------------------------------------------------------------------------------

MODEL_WEIGHTS: dict[str, tuple[str, ...]] = {
    # comfy/ldm/flux/model.py:88 double_blocks = DoubleStreamBlock (layers.py:171-198):
    # img_mod/txt_mod = Modulation.lin (layers.py:134), img_attn/txt_attn = SelfAttention
    # .qkv/.proj (layers.py:117, 119), img_mlp/txt_mlp = Sequential(Linear, GELU, Linear)
    # (layers.py:84-88, Flux.1 has mlp_silu_act False). model.py:105 single_blocks =
    # SingleStreamBlock: linear1, linear2 (layers.py:311, 313), modulation.lin (321).
    "flux": (
        "double_blocks.{i}.img_mod.lin",
        "double_blocks.{i}.img_attn.qkv",
        "double_blocks.{i}.img_attn.proj",
        "double_blocks.{i}.img_mlp.0",
        "double_blocks.{i}.img_mlp.2",
        "double_blocks.{i}.txt_mod.lin",
        "double_blocks.{i}.txt_attn.qkv",
        "double_blocks.{i}.txt_attn.proj",
        "double_blocks.{i}.txt_mlp.0",
        "double_blocks.{i}.txt_mlp.2",
        "single_blocks.{i}.linear1",
        "single_blocks.{i}.linear2",
        "single_blocks.{i}.modulation.lin",
    ),
    # One SpatialTransformer of the SDXL UNet (input_blocks.4.1 = down_blocks.1.attentions.0):
    # proj_in/proj_out are Linear with use_linear_in_transformer (attention.py:990, 1003;
    # supported_models.py:189), transformer_blocks = BasicTransformerBlock (attention.py:807-838):
    # attn1/attn2 = CrossAttention to_q/to_k/to_v/to_out.0 (attention.py:784-788),
    # ff.net.0.proj = GEGLU.proj (attention.py:95, 112-116), ff.net.2. One ResBlock's time
    # embedding Linear: emb_layers.1 (openaimodel.py:208-213). SDXL_UNET_ATTENTIONS and
    # SDXL_UNET_RESNETS below list every other position.
    "sdxl_unet": (
        "input_blocks.4.1.proj_in",
        "input_blocks.4.1.transformer_blocks.{i}.attn1.to_q",
        "input_blocks.4.1.transformer_blocks.{i}.attn1.to_k",
        "input_blocks.4.1.transformer_blocks.{i}.attn1.to_v",
        "input_blocks.4.1.transformer_blocks.{i}.attn1.to_out.0",
        "input_blocks.4.1.transformer_blocks.{i}.attn2.to_q",
        "input_blocks.4.1.transformer_blocks.{i}.attn2.to_k",
        "input_blocks.4.1.transformer_blocks.{i}.attn2.to_v",
        "input_blocks.4.1.transformer_blocks.{i}.attn2.to_out.0",
        "input_blocks.4.1.transformer_blocks.{i}.ff.net.0.proj",
        "input_blocks.4.1.transformer_blocks.{i}.ff.net.2",
        "input_blocks.4.1.proj_out",
        "input_blocks.1.0.emb_layers.1",
    ),
    # SDXLClipModel.clip_l = SDClipModel (sdxl_clip.py:44), .transformer = CLIPTextModel
    # (sd1_clip.py:120; clip_model.py:158-164): text_model.encoder.layers.{i} = CLIPLayer with
    # self_attn q/k/v/out_proj (clip_model.py:29-33) and mlp fc1/fc2 (51-53); 12 layers
    # (sd1_clip_config.json). clip_l also has text_projection (clip_model.py:164), left out here:
    # diffusers' CLIPTextModel (SDXL text_encoder) has none, so diffusion-pipe trains none.
    "sdxl_te1": (
        "clip_l.transformer.text_model.encoder.layers.{i}.self_attn.q_proj",
        "clip_l.transformer.text_model.encoder.layers.{i}.self_attn.k_proj",
        "clip_l.transformer.text_model.encoder.layers.{i}.self_attn.v_proj",
        "clip_l.transformer.text_model.encoder.layers.{i}.self_attn.out_proj",
        "clip_l.transformer.text_model.encoder.layers.{i}.mlp.fc1",
        "clip_l.transformer.text_model.encoder.layers.{i}.mlp.fc2",
    ),
    # SDXLClipModel.clip_g = SDXLClipG (sdxl_clip.py:5-14, 45), same CLIPTextModel classes,
    # 32 layers (clip_config_bigg.json). text_projection (clip_model.py:164) is outside the
    # layers but a Linear diffusion-pipe trains (CLIPTextModelWithProjection.text_projection).
    "sdxl_te2": (
        "clip_g.transformer.text_model.encoder.layers.{i}.self_attn.q_proj",
        "clip_g.transformer.text_model.encoder.layers.{i}.self_attn.k_proj",
        "clip_g.transformer.text_model.encoder.layers.{i}.self_attn.v_proj",
        "clip_g.transformer.text_model.encoder.layers.{i}.self_attn.out_proj",
        "clip_g.transformer.text_model.encoder.layers.{i}.mlp.fc1",
        "clip_g.transformer.text_model.encoder.layers.{i}.mlp.fc2",
        "clip_g.transformer.text_projection",
    ),
    # comfy/ldm/wan/model.py:488-493 blocks = WanAttentionBlock (171-209): self_attn and
    # cross_attn q/k/v/o (WanSelfAttention, 52-55; t2v cross attention 93-110), ffn =
    # Sequential(Linear, GELU, Linear) (204-206).
    "wan_t2v": (
        "blocks.{i}.self_attn.q",
        "blocks.{i}.self_attn.k",
        "blocks.{i}.self_attn.v",
        "blocks.{i}.self_attn.o",
        "blocks.{i}.cross_attn.q",
        "blocks.{i}.cross_attn.k",
        "blocks.{i}.cross_attn.v",
        "blocks.{i}.cross_attn.o",
        "blocks.{i}.ffn.0",
        "blocks.{i}.ffn.2",
    ),
    # As t2v, with WanI2VCrossAttention's k_img and v_img (wan/model.py:113-124); i2v picked by
    # model_type "i2v" (model.py:487; supported_models.py:1093-1097).
    "wan_i2v": (
        "blocks.{i}.self_attn.q",
        "blocks.{i}.self_attn.k",
        "blocks.{i}.self_attn.v",
        "blocks.{i}.self_attn.o",
        "blocks.{i}.cross_attn.q",
        "blocks.{i}.cross_attn.k",
        "blocks.{i}.cross_attn.v",
        "blocks.{i}.cross_attn.o",
        "blocks.{i}.cross_attn.k_img",
        "blocks.{i}.cross_attn.v_img",
        "blocks.{i}.ffn.0",
        "blocks.{i}.ffn.2",
    ),
    # comfy/ldm/qwen_image/model.py:365 transformer_blocks = QwenImageTransformerBlock
    # (187-229): img_mod/txt_mod = Sequential(SiLU, Linear) (203-214), img_mlp/txt_mlp =
    # FeedForward.net [GELU(.proj), Dropout, Linear] (18, 43-46), attn = Attention to_q/to_k/
    # to_v, add_q/k/v_proj, to_out.0, to_add_out (123-137).
    "qwen_image": (
        "transformer_blocks.{i}.img_mod.1",
        "transformer_blocks.{i}.img_mlp.net.0.proj",
        "transformer_blocks.{i}.img_mlp.net.2",
        "transformer_blocks.{i}.txt_mod.1",
        "transformer_blocks.{i}.txt_mlp.net.0.proj",
        "transformer_blocks.{i}.txt_mlp.net.2",
        "transformer_blocks.{i}.attn.to_q",
        "transformer_blocks.{i}.attn.to_k",
        "transformer_blocks.{i}.attn.to_v",
        "transformer_blocks.{i}.attn.add_q_proj",
        "transformer_blocks.{i}.attn.add_k_proj",
        "transformer_blocks.{i}.attn.add_v_proj",
        "transformer_blocks.{i}.attn.to_out.0",
        "transformer_blocks.{i}.attn.to_add_out",
    ),
    # comfy/ldm/lumina/model.py NextDiT (355-496), Z-Image = ZImage(Lumina2) with
    # z_image_modulation (supported_models.py:1034; model_detection.py:436-446).
    # JointTransformerBlock (182-256): attention.qkv (fused, 58-64), attention.out (65-71),
    # feed_forward.w1/w2/w3 (152-172), adaLN_modulation = Sequential(Linear) when
    # z_image_modulation (233-241). layers (476-491) and noise_refiner (403-419) have
    # modulation; context_refiner (421-437) is built with modulation=False, no adaLN_modulation.
    "z_image": (
        "layers.{i}.attention.qkv",
        "layers.{i}.attention.out",
        "layers.{i}.feed_forward.w1",
        "layers.{i}.feed_forward.w2",
        "layers.{i}.feed_forward.w3",
        "layers.{i}.adaLN_modulation.0",
        "noise_refiner.{i}.attention.qkv",
        "noise_refiner.{i}.attention.out",
        "noise_refiner.{i}.feed_forward.w1",
        "noise_refiner.{i}.feed_forward.w2",
        "noise_refiner.{i}.feed_forward.w3",
        "noise_refiner.{i}.adaLN_modulation.0",
        "context_refiner.{i}.attention.qkv",
        "context_refiner.{i}.attention.out",
        "context_refiner.{i}.feed_forward.w1",
        "context_refiner.{i}.feed_forward.w2",
        "context_refiner.{i}.feed_forward.w3",
    ),
}

# ---------------------------------------------------------------------------------------------
# LoRA keys, in diffusion-pipe's format per family, that ComfyUI maps onto those weights.
# ---------------------------------------------------------------------------------------------

LORA_ALIASES: dict[str, dict[str, tuple[LoraAlias, ...]]] = {
    # Flux: diffusers names under `transformer.`: lora.py:255-262 (model_base.Flux), key
    # "transformer." + flux_to_diffusers key (260). Fused targets: to_q/to_k/to_v -> img_attn.qkv
    # and add_q/k/v_proj -> txt_attn.qkv at offsets 0, h, 2h, length h (utils.py:583-594);
    # single blocks to_q/to_k/to_v -> linear1 at 0, h, 2h and proj_mlp -> linear1 at 3h, length
    # 4h (utils.py:626-632; the 4 is written there, Flux.1's mlp_ratio 4). The rest 1:1
    # (utils.py:596-620, 634-644). Not mapped for Flux: diffusers names under
    # `diffusion_model.` (only ComfyUI's own names are, lora.py:184).
    "flux": {
        "double_blocks.{i}.img_mod.lin": (
            LoraAlias("transformer.transformer_blocks.{i}.norm1.linear"),  # utils.py:599
        ),
        "double_blocks.{i}.img_attn.qkv": (
            LoraAlias("transformer.transformer_blocks.{i}.attn.to_q", _Q),  # utils.py:586
            LoraAlias("transformer.transformer_blocks.{i}.attn.to_k", _K),  # utils.py:587
            LoraAlias("transformer.transformer_blocks.{i}.attn.to_v", _V),  # utils.py:588
        ),
        "double_blocks.{i}.img_attn.proj": (
            LoraAlias("transformer.transformer_blocks.{i}.attn.to_out.0"),  # utils.py:597
        ),
        "double_blocks.{i}.img_mlp.0": (
            LoraAlias("transformer.transformer_blocks.{i}.ff.net.0.proj"),  # utils.py:605
        ),
        "double_blocks.{i}.img_mlp.2": (
            LoraAlias("transformer.transformer_blocks.{i}.ff.net.2"),  # utils.py:607
        ),
        "double_blocks.{i}.txt_mod.lin": (
            LoraAlias("transformer.transformer_blocks.{i}.norm1_context.linear"),  # utils.py:601
        ),
        "double_blocks.{i}.txt_attn.qkv": (
            LoraAlias("transformer.transformer_blocks.{i}.attn.add_q_proj", _Q),  # utils.py:592
            LoraAlias("transformer.transformer_blocks.{i}.attn.add_k_proj", _K),  # utils.py:593
            LoraAlias("transformer.transformer_blocks.{i}.attn.add_v_proj", _V),  # utils.py:594
        ),
        "double_blocks.{i}.txt_attn.proj": (
            LoraAlias("transformer.transformer_blocks.{i}.attn.to_add_out"),  # utils.py:603
        ),
        "double_blocks.{i}.txt_mlp.0": (
            LoraAlias("transformer.transformer_blocks.{i}.ff_context.net.0.proj"),  # utils.py:609
        ),
        "double_blocks.{i}.txt_mlp.2": (
            LoraAlias("transformer.transformer_blocks.{i}.ff_context.net.2"),  # utils.py:611
        ),
        "single_blocks.{i}.linear1": (
            LoraAlias("transformer.single_transformer_blocks.{i}.attn.to_q", _Q),  # utils.py:629
            LoraAlias("transformer.single_transformer_blocks.{i}.attn.to_k", _K),  # utils.py:630
            LoraAlias("transformer.single_transformer_blocks.{i}.attn.to_v", _V),  # utils.py:631
            # utils.py:632
            LoraAlias("transformer.single_transformer_blocks.{i}.proj_mlp", Slice(0, 3, 4)),
        ),
        "single_blocks.{i}.linear2": (
            LoraAlias("transformer.single_transformer_blocks.{i}.proj_out"),  # utils.py:637
        ),
        "single_blocks.{i}.modulation.lin": (
            LoraAlias("transformer.single_transformer_blocks.{i}.norm.linear"),  # utils.py:635
        ),
    },
    # SDXL UNet: kohya `lora_unet_` + diffusers name with "." -> "_": lora.py:188-193 over
    # unet_to_diffusers (utils.py:270-334; transformer entries 211-232 via 289-293, proj_in/out
    # 202-209, time_emb_proj 237 via 285-286). (`lora_unet_` + ComfyUI's LDM names is mapped as
    # well, lora.py:183, but diffusion-pipe writes diffusers names.) Not mapped: plain PEFT
    # diffusers names for attention, e.g. `unet.down_blocks...attn1.to_q`; ComfyUI expects
    # `...attn1.processor.to_q` there (lora.py:196-201). diffusion-pipe's SDXL files are kohya.
    "sdxl_unet": {
        "input_blocks.4.1.proj_in": (LoraAlias("lora_unet_down_blocks_1_attentions_0_proj_in"),),
        _SDXL_LDM_TB + "attn1.to_q": (LoraAlias(_SDXL_TB + "attn1_to_q"),),
        _SDXL_LDM_TB + "attn1.to_k": (LoraAlias(_SDXL_TB + "attn1_to_k"),),
        _SDXL_LDM_TB + "attn1.to_v": (LoraAlias(_SDXL_TB + "attn1_to_v"),),
        _SDXL_LDM_TB + "attn1.to_out.0": (LoraAlias(_SDXL_TB + "attn1_to_out_0"),),
        _SDXL_LDM_TB + "attn2.to_q": (LoraAlias(_SDXL_TB + "attn2_to_q"),),
        _SDXL_LDM_TB + "attn2.to_k": (LoraAlias(_SDXL_TB + "attn2_to_k"),),
        _SDXL_LDM_TB + "attn2.to_v": (LoraAlias(_SDXL_TB + "attn2_to_v"),),
        _SDXL_LDM_TB + "attn2.to_out.0": (LoraAlias(_SDXL_TB + "attn2_to_out_0"),),
        _SDXL_LDM_TB + "ff.net.0.proj": (LoraAlias(_SDXL_TB + "ff_net_0_proj"),),
        _SDXL_LDM_TB + "ff.net.2": (LoraAlias(_SDXL_TB + "ff_net_2"),),
        "input_blocks.4.1.proj_out": (LoraAlias("lora_unet_down_blocks_1_attentions_0_proj_out"),),
        "input_blocks.1.0.emb_layers.1": (
            LoraAlias("lora_unet_down_blocks_0_resnets_0_time_emb_proj"),
        ),
    },
    # SDXL text encoder 1 (clip_l): `lora_te1_text_model_encoder_layers_{i}_<LORA_CLIP_MAP>`
    # (lora.py:117-125, "SDXL base" at 121; LORA_CLIP_MAP 27-34), for layers b < 32 (loop at
    # 106). Caveat outside ComfyUI: in transformers 5.x (5.24.0, the worker image's lock)
    # CLIPTextModel has no `text_model.` level (transformers conversion_mapping.py,
    # PrefixChange(prefix_to_remove="text_model")), so a kohya key made from its module names
    # would read `lora_te1_encoder_layers_{i}_...`, which ComfyUI does NOT map.
    "sdxl_te1": {
        "clip_l.transformer.text_model.encoder.layers.{i}.self_attn.q_proj": (
            LoraAlias("lora_te1_text_model_encoder_layers_{i}_self_attn_q_proj"),
        ),
        "clip_l.transformer.text_model.encoder.layers.{i}.self_attn.k_proj": (
            LoraAlias("lora_te1_text_model_encoder_layers_{i}_self_attn_k_proj"),
        ),
        "clip_l.transformer.text_model.encoder.layers.{i}.self_attn.v_proj": (
            LoraAlias("lora_te1_text_model_encoder_layers_{i}_self_attn_v_proj"),
        ),
        "clip_l.transformer.text_model.encoder.layers.{i}.self_attn.out_proj": (
            LoraAlias("lora_te1_text_model_encoder_layers_{i}_self_attn_out_proj"),
        ),
        "clip_l.transformer.text_model.encoder.layers.{i}.mlp.fc1": (
            LoraAlias("lora_te1_text_model_encoder_layers_{i}_mlp_fc1"),
        ),
        "clip_l.transformer.text_model.encoder.layers.{i}.mlp.fc2": (
            LoraAlias("lora_te1_text_model_encoder_layers_{i}_mlp_fc2"),
        ),
    },
    # SDXL text encoder 2 (clip_g): `lora_te2_text_model_encoder_layers_{i}_...` only when clip_l
    # is present (lora.py:127-134, "SDXL base" at 131), which holds for SDXLClipModel;
    # text_projection as `lora_te2_text_projection` (lora.py:163-167). CLIPTextModelWithProjection
    # keeps its `text_model.` level in transformers 5.24.0, unlike CLIPTextModel (see te1).
    "sdxl_te2": {
        "clip_g.transformer.text_model.encoder.layers.{i}.self_attn.q_proj": (
            LoraAlias("lora_te2_text_model_encoder_layers_{i}_self_attn_q_proj"),
        ),
        "clip_g.transformer.text_model.encoder.layers.{i}.self_attn.k_proj": (
            LoraAlias("lora_te2_text_model_encoder_layers_{i}_self_attn_k_proj"),
        ),
        "clip_g.transformer.text_model.encoder.layers.{i}.self_attn.v_proj": (
            LoraAlias("lora_te2_text_model_encoder_layers_{i}_self_attn_v_proj"),
        ),
        "clip_g.transformer.text_model.encoder.layers.{i}.self_attn.out_proj": (
            LoraAlias("lora_te2_text_model_encoder_layers_{i}_self_attn_out_proj"),
        ),
        "clip_g.transformer.text_model.encoder.layers.{i}.mlp.fc1": (
            LoraAlias("lora_te2_text_model_encoder_layers_{i}_mlp_fc1"),
        ),
        "clip_g.transformer.text_model.encoder.layers.{i}.mlp.fc2": (
            LoraAlias("lora_te2_text_model_encoder_layers_{i}_mlp_fc2"),
        ),
        "clip_g.transformer.text_projection": (LoraAlias("lora_te2_text_projection"),),
    },
    # Wan: no Wan branch in model_lora_keys_unet (lora.py:175-333); only the generic
    # `diffusion_model.<name>` entry (lora.py:184) and `lora_unet_<name_>` (183) map. Not mapped
    # for Wan: a `transformer.` prefix.
    "wan_t2v": {
        "blocks.{i}.self_attn.q": (LoraAlias("diffusion_model.blocks.{i}.self_attn.q"),),
        "blocks.{i}.self_attn.k": (LoraAlias("diffusion_model.blocks.{i}.self_attn.k"),),
        "blocks.{i}.self_attn.v": (LoraAlias("diffusion_model.blocks.{i}.self_attn.v"),),
        "blocks.{i}.self_attn.o": (LoraAlias("diffusion_model.blocks.{i}.self_attn.o"),),
        "blocks.{i}.cross_attn.q": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.q"),),
        "blocks.{i}.cross_attn.k": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.k"),),
        "blocks.{i}.cross_attn.v": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.v"),),
        "blocks.{i}.cross_attn.o": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.o"),),
        "blocks.{i}.ffn.0": (LoraAlias("diffusion_model.blocks.{i}.ffn.0"),),
        "blocks.{i}.ffn.2": (LoraAlias("diffusion_model.blocks.{i}.ffn.2"),),
    },
    # Wan I2V: as t2v (lora.py:184), plus k_img/v_img.
    "wan_i2v": {
        "blocks.{i}.self_attn.q": (LoraAlias("diffusion_model.blocks.{i}.self_attn.q"),),
        "blocks.{i}.self_attn.k": (LoraAlias("diffusion_model.blocks.{i}.self_attn.k"),),
        "blocks.{i}.self_attn.v": (LoraAlias("diffusion_model.blocks.{i}.self_attn.v"),),
        "blocks.{i}.self_attn.o": (LoraAlias("diffusion_model.blocks.{i}.self_attn.o"),),
        "blocks.{i}.cross_attn.q": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.q"),),
        "blocks.{i}.cross_attn.k": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.k"),),
        "blocks.{i}.cross_attn.v": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.v"),),
        "blocks.{i}.cross_attn.o": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.o"),),
        "blocks.{i}.cross_attn.k_img": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.k_img"),),
        "blocks.{i}.cross_attn.v_img": (LoraAlias("diffusion_model.blocks.{i}.cross_attn.v_img"),),
        "blocks.{i}.ffn.0": (LoraAlias("diffusion_model.blocks.{i}.ffn.0"),),
        "blocks.{i}.ffn.2": (LoraAlias("diffusion_model.blocks.{i}.ffn.2"),),
    },
    # Qwen-Image: generic `diffusion_model.<name>` (lora.py:184). The QwenImage branch
    # (lora.py:306-314) adds the bare name (311), `transformer.` (313) and `lycoris_` (314).
    "qwen_image": {
        "transformer_blocks.{i}.img_mod.1": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.img_mod.1"),
        ),
        "transformer_blocks.{i}.img_mlp.net.0.proj": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.img_mlp.net.0.proj"),
        ),
        "transformer_blocks.{i}.img_mlp.net.2": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.img_mlp.net.2"),
        ),
        "transformer_blocks.{i}.txt_mod.1": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.txt_mod.1"),
        ),
        "transformer_blocks.{i}.txt_mlp.net.0.proj": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.txt_mlp.net.0.proj"),
        ),
        "transformer_blocks.{i}.txt_mlp.net.2": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.txt_mlp.net.2"),
        ),
        "transformer_blocks.{i}.attn.to_q": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.attn.to_q"),
        ),
        "transformer_blocks.{i}.attn.to_k": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.attn.to_k"),
        ),
        "transformer_blocks.{i}.attn.to_v": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.attn.to_v"),
        ),
        "transformer_blocks.{i}.attn.add_q_proj": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.attn.add_q_proj"),
        ),
        "transformer_blocks.{i}.attn.add_k_proj": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.attn.add_k_proj"),
        ),
        "transformer_blocks.{i}.attn.add_v_proj": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.attn.add_v_proj"),
        ),
        "transformer_blocks.{i}.attn.to_out.0": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.attn.to_out.0"),
        ),
        "transformer_blocks.{i}.attn.to_add_out": (
            LoraAlias("diffusion_model.transformer_blocks.{i}.attn.to_add_out"),
        ),
    },
    # Z-Image: ComfyUI's own NextDiT names under `diffusion_model.` (generic, lora.py:184; the
    # Lumina2 branch re-maps the identical names for feed_forward/adaLN_modulation to the same
    # weights, lora.py:316-324 with utils.py:694-711). That branch also maps diffusers-style
    # `diffusion_model.<block>.attention.to_q/to_k/to_v` onto slices 0/1/2 (unit dim) of
    # attention.qkv and `...attention.to_out.0` onto attention.out (utils.py:686-697, 322),
    # plus `transformer.` and `lycoris_` forms (323-324); the slices assume n_kv_heads ==
    # n_heads (30 == 30 for Z-Image, model_detection.py:437-438). diffusion-pipe's Z-Image
    # trains ComfyUI's own NextDiT, so its keys are the fused names below.
    "z_image": {
        "layers.{i}.attention.qkv": (LoraAlias("diffusion_model.layers.{i}.attention.qkv"),),
        "layers.{i}.attention.out": (LoraAlias("diffusion_model.layers.{i}.attention.out"),),
        "layers.{i}.feed_forward.w1": (LoraAlias("diffusion_model.layers.{i}.feed_forward.w1"),),
        "layers.{i}.feed_forward.w2": (LoraAlias("diffusion_model.layers.{i}.feed_forward.w2"),),
        "layers.{i}.feed_forward.w3": (LoraAlias("diffusion_model.layers.{i}.feed_forward.w3"),),
        "layers.{i}.adaLN_modulation.0": (
            LoraAlias("diffusion_model.layers.{i}.adaLN_modulation.0"),
        ),
        "noise_refiner.{i}.attention.qkv": (
            LoraAlias("diffusion_model.noise_refiner.{i}.attention.qkv"),
        ),
        "noise_refiner.{i}.attention.out": (
            LoraAlias("diffusion_model.noise_refiner.{i}.attention.out"),
        ),
        "noise_refiner.{i}.feed_forward.w1": (
            LoraAlias("diffusion_model.noise_refiner.{i}.feed_forward.w1"),
        ),
        "noise_refiner.{i}.feed_forward.w2": (
            LoraAlias("diffusion_model.noise_refiner.{i}.feed_forward.w2"),
        ),
        "noise_refiner.{i}.feed_forward.w3": (
            LoraAlias("diffusion_model.noise_refiner.{i}.feed_forward.w3"),
        ),
        "noise_refiner.{i}.adaLN_modulation.0": (
            LoraAlias("diffusion_model.noise_refiner.{i}.adaLN_modulation.0"),
        ),
        "context_refiner.{i}.attention.qkv": (
            LoraAlias("diffusion_model.context_refiner.{i}.attention.qkv"),
        ),
        "context_refiner.{i}.attention.out": (
            LoraAlias("diffusion_model.context_refiner.{i}.attention.out"),
        ),
        "context_refiner.{i}.feed_forward.w1": (
            LoraAlias("diffusion_model.context_refiner.{i}.feed_forward.w1"),
        ),
        "context_refiner.{i}.feed_forward.w2": (
            LoraAlias("diffusion_model.context_refiner.{i}.feed_forward.w2"),
        ),
        "context_refiner.{i}.feed_forward.w3": (
            LoraAlias("diffusion_model.context_refiner.{i}.feed_forward.w3"),
        ),
    },
}

# ---------------------------------------------------------------------------------------------
# SDXL UNet positions: ComfyUI (LDM) prefix -> diffusers prefix, as unet_to_diffusers
# (utils.py:270-334) gives them for SDXL's config (model_detection.py:887-891: num_res_blocks
# [2, 2, 2], channel_mult [1, 2, 4], transformer_depth [0, 0, 2, 2, 10, 10], middle 10,
# transformer_depth_output [0, 0, 0, 2, 2, 2, 10, 10, 10]). The kohya key of a weight is
# `lora_unet_` + (diffusers prefix + rest).replace(".", "_") (lora.py:192-193).
# ---------------------------------------------------------------------------------------------

# (LDM SpatialTransformer prefix, diffusers attentions prefix, transformer blocks in it)
SDXL_UNET_ATTENTIONS: tuple[tuple[str, str, int], ...] = (
    ("input_blocks.4.1", "down_blocks.1.attentions.0", 2),
    ("input_blocks.5.1", "down_blocks.1.attentions.1", 2),
    ("input_blocks.7.1", "down_blocks.2.attentions.0", 10),
    ("input_blocks.8.1", "down_blocks.2.attentions.1", 10),
    ("middle_block.1", "mid_block.attentions.0", 10),
    ("output_blocks.0.1", "up_blocks.0.attentions.0", 10),
    ("output_blocks.1.1", "up_blocks.0.attentions.1", 10),
    ("output_blocks.2.1", "up_blocks.0.attentions.2", 10),
    ("output_blocks.3.1", "up_blocks.1.attentions.0", 2),
    ("output_blocks.4.1", "up_blocks.1.attentions.1", 2),
    ("output_blocks.5.1", "up_blocks.1.attentions.2", 2),
)

# (LDM ResBlock prefix, diffusers resnets prefix); emb_layers.1 <-> time_emb_proj
# (utils.py:237).
SDXL_UNET_RESNETS: tuple[tuple[str, str], ...] = (
    ("input_blocks.1.0", "down_blocks.0.resnets.0"),
    ("input_blocks.2.0", "down_blocks.0.resnets.1"),
    ("input_blocks.4.0", "down_blocks.1.resnets.0"),
    ("input_blocks.5.0", "down_blocks.1.resnets.1"),
    ("input_blocks.7.0", "down_blocks.2.resnets.0"),
    ("input_blocks.8.0", "down_blocks.2.resnets.1"),
    ("middle_block.0", "mid_block.resnets.0"),
    ("middle_block.2", "mid_block.resnets.1"),
    ("output_blocks.0.0", "up_blocks.0.resnets.0"),
    ("output_blocks.1.0", "up_blocks.0.resnets.1"),
    ("output_blocks.2.0", "up_blocks.0.resnets.2"),
    ("output_blocks.3.0", "up_blocks.1.resnets.0"),
    ("output_blocks.4.0", "up_blocks.1.resnets.1"),
    ("output_blocks.5.0", "up_blocks.1.resnets.2"),
    ("output_blocks.6.0", "up_blocks.2.resnets.0"),
    ("output_blocks.7.0", "up_blocks.2.resnets.1"),
    ("output_blocks.8.0", "up_blocks.2.resnets.2"),
)

# Layer counts of the SDXL text encoders (sd1_clip_config.json, clip_config_bigg.json);
# model_lora_keys_clip maps layers 0..31 only (lora.py:106).
SDXL_CLIP_LAYERS: dict[str, int] = {"sdxl_te1": 12, "sdxl_te2": 32}
CLIP_MAPPED_LAYER_LIMIT: int = 32
