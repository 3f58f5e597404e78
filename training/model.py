"""The restora-lite network: a small residual U-Net of plain 3x3 convolutions.

Why this shape (measured on the 2-core AVX2 CPU, ORT 1.32, see issue 8): plain 3x3 convolutions
beat depthwise-separable ones at equal FLOPs, pixel-(un)shuffle and layout transposes cost about a
third of the time, and ConvTranspose stays float under INT8. So: strided 3x3 convs go down, nearest
upsampling + 3x3 conv comes back up, skips are added (not concatenated, to keep channel counts and
FLOPs small), ReLU everywhere (fuses with Conv in ORT and quantizes cleanly), and the net predicts a
residual that is added to its input, so an untrained net is the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class NetConfig:
    """Channel widths per level (full, 1/2, 1/4, 1/8 resolution) and residual blocks at 1/8.

    ``scale``: the U-Net works on the input average-pooled by this factor, and its residual is
    upsampled back (bilinear) and added to the full-resolution input. Training uses ``native``
    (no pooling). Scale 2 (a 200 px UTKFace face is about a 512 px FFHQ face pooled by 2) was
    measured and lost twice. Trained at scale 1 and run pooled: on 12 validation faces, medium +0.11
    dB vs +0.36 at scale 1, mild -1.9 vs -0.56. v7 fine-tuned at scale 2 on degradations scaled to it
    (``--degradation-scale``, docs/TRAINING.md): severe +1.08 dB vs v7's +0.90, but mild -0.04 vs
    +0.64 and medium +0.64 vs +0.87 (16 faces), because the upsampled residual cannot restore detail
    above the pooled image's limit. So scale 1 is the default.
    """

    widths: tuple[int, int, int, int] = (16, 32, 48, 64)
    blocks: int = 3
    # Residual blocks on the decoder's 1/4-resolution features (encoder skip + upsampled context):
    # the scale where a x4-downscaled face's remaining information lives.
    quarter_blocks: int = 0
    # ReLU after the decoder convs up3 and up2, before their upsampled output joins the skip.
    # v1-v4 had it and up2's died (see revive_deep_path); without it the path cannot die.
    deep_relu: bool = True
    # Negative slope of the activations at 1/8 resolution (down3's and the ResBlocks' inner ones):
    # 0 is ReLU. v5 had a third of those channels dead, and revived ones died again; a leaky slope
    # keeps a gradient through them. onnxruntime runs it as QLinearLeakyRelu at no measurable cost.
    body_slope: float = 0.0
    upsample: str = "bilinear"  # "bilinear" | "nearest"
    scale: int = 1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, object]) -> NetConfig:
        widths = tuple(int(w) for w in d["widths"])  # type: ignore[attr-defined]
        return NetConfig(
            widths=widths,  # type: ignore[arg-type]
            blocks=int(d["blocks"]),  # type: ignore[call-overload]
            quarter_blocks=int(d.get("quarter_blocks", 0)),  # type: ignore[call-overload]
            deep_relu=bool(d.get("deep_relu", True)),
            body_slope=float(d.get("body_slope", 0.0)),  # type: ignore[arg-type]
            upsample=str(d.get("upsample", "bilinear")),
            scale=int(d.get("scale", 1)),  # type: ignore[call-overload]
        )


def conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def activation(x: torch.Tensor, slope: float) -> torch.Tensor:
    return F.leaky_relu(x, slope) if slope > 0 else F.relu(x)


def at_scale(native: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int) -> torch.Tensor:
    """``native`` on ``x`` average-pooled by ``scale``, its residual upsampled back onto ``x``."""
    if scale == 1:
        return native(x)
    low = F.avg_pool2d(x, scale)
    residual = native(low) - low
    return x + F.interpolate(residual, scale_factor=float(scale), mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    def __init__(self, ch: int, slope: float = 0.0) -> None:
        super().__init__()
        self.conv1 = conv3(ch, ch)
        self.conv2 = conv3(ch, ch)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(activation(self.conv1(x), self.slope))


class RestoraLite(nn.Module):
    """Input and output: N x 3 x H x W RGB in [0, 1]; H and W multiples of 8 x ``config.scale``."""

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__()
        self.config = config or NetConfig()
        c0, c1, c2, c3 = self.config.widths
        self.head = conv3(3, c0)
        self.down1 = conv3(c0, c1, stride=2)
        self.down2 = conv3(c1, c2, stride=2)
        self.down3 = conv3(c2, c3, stride=2)
        self.body = nn.Sequential(*[ResBlock(c3, self.config.body_slope) for _ in range(self.config.blocks)])
        self.quarter = nn.Sequential(*[ResBlock(c2) for _ in range(self.config.quarter_blocks)])
        # Decoder convs run at the lower resolution before upsampling: the full-resolution
        # convs are the most expensive ones on a CPU, so only head and tail work at 512.
        self.up3 = conv3(c3, c2)
        self.up2 = conv3(c2, c1)
        self.up1 = conv3(c1, c0)
        self.tail = conv3(c0, 3)
        # Start as the identity: the residual branch outputs zero until it learns something.
        nn.init.zeros_(self.tail.weight)
        if self.tail.bias is not None:
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return at_scale(self.native, x, self.config.scale)

    def native(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net on an image at the training scale (input + predicted residual)."""
        return self.native_with_body(x)[0]

    def native_with_body(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``native`` and the 1/8-resolution body features behind it (what distillation matches)."""
        f0, half, f3 = self.features(x)
        residual = self.tail(self._up(half) + f0)
        return x + residual, f3

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The full-resolution head features, the decoder's output at 1/2 resolution (before it is
        upsampled and joins the head's skip for the tail), and the 1/8 body features."""
        f0 = F.relu(self.head(x))
        f1 = F.relu(self.down1(f0))
        f2 = F.relu(self.down2(f1))
        f3 = activation(self.down3(f2), self.config.body_slope)
        f3 = self.body(f3)
        u2 = self.quarter(self._up(self._deep(self.up3(f3))) + f2)
        u1 = self._up(self._deep(self.up2(u2))) + f1
        return f0, F.relu(self.up1(u1)), f3

    def _deep(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if self.config.deep_relu else x

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.upsample == "nearest":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def grow_blocks(parent: RestoraLite, extra: int, quarter: int = 0) -> RestoraLite:
    """``parent`` with ``extra`` residual blocks appended at 1/8 resolution and ``quarter`` at 1/4,
    computing the same function.

    The new blocks' second conv starts at zero, so each is the identity until it learns: training a
    deeper net from a trained one starts at the parent's quality instead of from scratch, which is
    what makes a capacity experiment affordable on a CPU.
    """
    if extra < 0 or quarter < 0:
        raise ValueError(f"extra blocks must be >= 0, got {extra} and {quarter}")
    config = replace(
        parent.config,
        blocks=parent.config.blocks + extra,
        quarter_blocks=parent.config.quarter_blocks + quarter,
    )
    grown = RestoraLite(config)
    missing, unexpected = grown.load_state_dict(parent.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"parent has weights the grown net lacks: {unexpected}")
    new_blocks = list(grown.body)[parent.config.blocks :] + list(grown.quarter)[parent.config.quarter_blocks :]
    for block in new_blocks:
        assert isinstance(block, ResBlock)
        nn.init.zeros_(block.conv2.weight)
        if block.conv2.bias is not None:
            nn.init.zeros_(block.conv2.bias)
    assert all(k.startswith(("body.", "quarter.")) for k in missing), missing
    return grown


def drop_blocks(parent: RestoraLite, indices: Sequence[int]) -> RestoraLite:
    """``parent`` without the 1/8-resolution residual blocks at ``indices`` (0 is the first).

    The speed lever that pays for depth elsewhere: a block at 1/8 costs 0.68 GMACs at 512 px with
    96 channels, one at 1/4 with 64 channels 1.2. Each block adds a residual to the stream, so the
    net without one still computes most of what it did, and fine-tuning recovers the rest faster
    than training the smaller net from scratch.
    """
    drop = sorted(set(indices))
    if not drop or drop[0] < 0 or drop[-1] >= parent.config.blocks:
        raise ValueError(f"blocks to drop must be in 0..{parent.config.blocks - 1}, got {list(indices)}")
    kept = [i for i in range(parent.config.blocks) if i not in drop]
    smaller = RestoraLite(replace(parent.config, blocks=len(kept)))
    outside_body = {k: v for k, v in parent.state_dict().items() if not k.startswith("body.")}
    missing, unexpected = smaller.load_state_dict(outside_body, strict=False)
    assert not unexpected and all(k.startswith("body.") for k in missing), (missing, unexpected)
    for new, old in enumerate(kept):
        smaller.body[new].load_state_dict(parent.body[old].state_dict())
    return smaller


def widen(parent: RestoraLite, widths: tuple[int, int, int, int], seed: int = 0, scale: float = 0.1) -> RestoraLite:
    """``parent`` with more channels per level, computing exactly the same function.

    Net2WiderNet-style: every conv keeps its trained weights in the top-left block; the new output
    channels read the old inputs through fresh weights (``scale`` times PyTorch's default
    initialisation), and every conv reads the new channels through zero weights. So the new
    channels change nothing until training gives their consumers weight, which their first gradient
    step does (they are computed, so the consumers' new columns get gradients). Channels that join
    by addition (a skip and the decoder output at the same level, the 1/8 residual stream) are
    widened together, since they are one level's width. The capacity lever for a CPU budget: a
    wider net starts at the parent's quality instead of from scratch.
    """
    old = parent.config.widths
    if len(widths) != 4 or any(new < had for new, had in zip(widths, old, strict=True)):
        raise ValueError(f"widths must be 4 numbers, each at least the parent's {old}, got {widths}")
    wide = RestoraLite(replace(parent.config, widths=widths))
    generator = torch.Generator().manual_seed(seed)
    wide_modules = dict(wide.named_modules())
    with torch.no_grad():
        for name, conv in parent.named_modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            target = wide_modules[name]
            assert isinstance(target, nn.Conv2d)
            out_c, in_c = conv.out_channels, conv.in_channels
            fan_in = in_c * conv.kernel_size[0] * conv.kernel_size[1]
            bound = scale / fan_in**0.5
            fresh = (torch.rand(target.weight.shape, generator=generator) * 2 - 1) * bound
            target.weight.copy_(fresh)
            target.weight[:, in_c:] = 0.0  # nobody reads the new channels yet
            target.weight[:out_c, :in_c] = conv.weight
            if target.bias is not None and conv.bias is not None:
                target.bias.zero_()
                target.bias[:out_c] = conv.bias
    return wide.train(parent.training)


def revive_deep_path(model: RestoraLite, seed: int = 0) -> RestoraLite:
    """A copy of ``model`` whose 1/4- and 1/8-resolution path (down2, down3, body, up3, up2) starts over.

    Why: in restora-lite v1-v4 the ReLU after ``up2`` had died (its pre-activation was negative at
    every pixel of a real face), so nothing below 1/2 resolution reached the output and no gradient
    reached it either: the net was a two-level U-Net however long it trained. Restarted with that
    ReLU, it died again within 250 steps (6 % of units alive): the trained shallow path treats any
    new contribution as noise, and a negative bias is the cheapest way to silence it. So the path
    gets fresh weights and loses the ReLU after up3 and up2 (``deep_relu=False``), and ``up2``
    starts at zero: the revived net computes exactly the parent's function, and up2's first
    gradient step opens the path.
    """
    revived = RestoraLite(replace(model.config, deep_relu=False))
    revived.load_state_dict(model.state_dict())
    fresh = RestoraLite(model.config)
    torch.manual_seed(seed)
    for name in ("down2", "down3", "body", "up3", "quarter"):
        for module in getattr(fresh, name).modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
        getattr(revived, name).load_state_dict(getattr(fresh, name).state_dict())
    with torch.no_grad():
        revived.up2.weight.zero_()
        assert revived.up2.bias is not None
        revived.up2.bias.zero_()
    return revived.train(model.training)


def deep_path_live(model: RestoraLite, x: torch.Tensor) -> float:
    """Share of ``up2``'s outputs that reach the output on ``x``: 0 means the 1/4 and 1/8 levels are dead."""
    if not model.config.deep_relu:
        return 1.0  # no ReLU there: every output passes
    seen: list[torch.Tensor] = []
    # A hook on the real forward pass, rather than a second copy of it here.
    handle = model.up2.register_forward_hook(lambda _module, _inputs, output: seen.append(output))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return float((seen[0] > 0).float().mean())


def relu_sites(model: RestoraLite) -> dict[str, nn.Conv2d]:
    """The convs whose outputs pass through a ReLU, by name, in forward order (their channels can die)."""
    sites: dict[str, nn.Conv2d] = {"head": model.head, "down1": model.down1, "down2": model.down2, "down3": model.down3}
    for i, block in enumerate(model.body):
        assert isinstance(block, ResBlock)
        sites[f"body.{i}.conv1"] = block.conv1
    if model.config.deep_relu:
        sites["up3"] = model.up3
    for i, block in enumerate(model.quarter):
        assert isinstance(block, ResBlock)
        sites[f"quarter.{i}.conv1"] = block.conv1
    if model.config.deep_relu:
        sites["up2"] = model.up2
    sites["up1"] = model.up1
    return sites


def site_outputs(model: RestoraLite, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each ReLU site's pre-activation on ``x``."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        conv.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach()))
        for name, conv in relu_sites(model).items()
    ]
    try:
        with torch.no_grad():
            model.native(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def channel_liveness(model: RestoraLite, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """For each ReLU site, the share of positions in ``x`` where each channel passes (> 0).

    A channel at 0 is dead on ``x``: no output and no gradient, so it never comes back by itself.
    """
    return {name: (out > 0).float().mean(dim=(0, 2, 3)) for name, out in site_outputs(model, x).items()}


def dead_channel_count(model: RestoraLite, x: torch.Tensor) -> int:
    return int(sum(int((live == 0).sum()) for live in channel_liveness(model, x).values()))


def revive_dead_channels(model: RestoraLite, x: torch.Tensor, seed: int = 0, scale: float = 0.1) -> dict[str, int]:
    """Give the channels that are dead on ``x`` fresh input weights, in place; returns how many per site.

    Why: restora-lite v5 had 77 of the 288 inner channels of its 1/8-resolution residual blocks dead
    on 64 training patches (108 channels in all), and a dead ReLU gets no gradient, so that capacity
    was lost for good. A ResBlock's conv1 channel feeds only its conv2, whose weights for it are
    zeroed: the net's function is unchanged, and conv2's first gradient steps open the channel. An
    encoder conv's channel also feeds a skip addition (down3's, the residual stream): the next conv's
    weights for it are zeroed too where there is one, and the channel starts at ``scale`` times the
    default initialisation, so the change to the output is small.
    """
    exclusive: dict[str, nn.Conv2d] = {"head": model.down1, "down1": model.down2, "down2": model.down3}
    exact: set[str] = set()
    for group in ("body", "quarter"):
        for i, block in enumerate(getattr(model, group)):
            assert isinstance(block, ResBlock)
            exclusive[f"{group}.{i}.conv1"] = block.conv2
            exact.add(f"{group}.{i}.conv1")
    generator = torch.Generator().manual_seed(seed)
    revived: dict[str, int] = {}
    # Site by site in forward order, measured again after each change: a revived channel upstream
    # changes what the later sites see.
    for name, conv in relu_sites(model).items():
        passing = (site_outputs(model, x)[name] > 0).float().mean(dim=(0, 2, 3))
        dead = torch.nonzero(passing == 0).flatten()
        if dead.numel() == 0:
            continue
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = 1.0 / fan_in**0.5  # PyTorch's default conv initialisation (kaiming_uniform, a=sqrt(5))
        bound *= 1.0 if name in exact else scale
        with torch.no_grad():
            fresh = (torch.rand((dead.numel(), *conv.weight.shape[1:]), generator=generator) * 2 - 1) * bound
            conv.weight[dead] = fresh
            if conv.bias is not None:
                # Centred on x, so about half the positions pass: the inputs are ReLU outputs (>= 0),
                # so with a zero bias a random channel is often negative everywhere, dead from the start.
                conv.bias[dead] = 0.0
                pre = site_outputs(model, x)[name][:, dead]
                conv.bias[dead] = -pre.transpose(0, 1).flatten(1).median(dim=1).values
            if name in exclusive:
                exclusive[name].weight[:, dead] = 0.0
        revived[name] = int(dead.numel())
    return revived


def _padded_conv(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    """``conv`` as the first outputs of a ``channels``-output conv whose other outputs are zero.

    Why: onnxruntime's convolution kernels work on blocks of output channels, and the 3-output RGB
    tail conv at full resolution used them so poorly that it took 23 of the INT8 model's 66 ms;
    padded to 16 outputs it took about 7 ms (2-core AVX2 CPU, ORT 1.32). FP32 ran 5 % slower padded.
    """
    wide = nn.Conv2d(conv.in_channels, channels, 3, padding=1)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[: conv.out_channels] = conv.weight
        assert wide.bias is not None and conv.bias is not None
        wide.bias.zero_()
        wide.bias[: conv.out_channels] = conv.bias
    return wide


class FoldedTail(nn.Module):
    """``model`` with its last upsampling folded into the tail: the graph INT8 is quantized from.

    ``tail(up(half) + f0)`` is ``tail(f0) + tail(up(half))``, and ``tail ∘ up`` (two linear maps: a
    3x3 conv after a x2 bilinear or nearest upsampling) is one 3x3 conv at 1/2 resolution with an
    RGB output for each of the four pixel phases, then a pixel shuffle. Why: the full-resolution
    16-channel upsampling and the addition after it were about a sixth of the INT8 model's time on
    the 2-core CPU; folded, the whole model ran 6 % faster (11-13 % in summed kernel time; ORT 1.32,
    the same weights). FP32 gained nothing, so only INT8 uses it.

    The function is the same except on the outermost pixel ring: the tail conv pads the upsampled
    features with zeros, the folded conv pads the 1/2-resolution ones by edge replication (exact for
    the upsampling itself). The engine's paste-back mask is zero on the crop's outer 4 % (feather_mask).
    """

    def __init__(self, model: RestoraLite, channels: int = 16) -> None:
        super().__init__()
        self.net = model.eval()
        tail = model.tail
        # onnxruntime ran the 12-output phase conv at half the speed of a 16-output one, and the
        # RGB tail with 4 or 8 outputs no faster than with 16: both are padded to 16.
        self.tail = _padded_conv(tail, channels)
        self.phase_tail = nn.Conv2d(tail.in_channels, max(channels, 4 * tail.out_channels), 3, bias=False)
        with torch.no_grad():
            self.phase_tail.weight.zero_()
            self.phase_tail.weight[: 4 * tail.out_channels] = self._phase_weights()

    def _phase_weights(self) -> torch.Tensor:
        """(3 * 4, C, 3, 3): read off ``tail(up(x))`` for a unit impulse in each input channel.

        For ``y = conv(x, W')`` then a pixel shuffle, output pixel (2m + p, 2n + q) of RGB channel o
        is channel 4 o + 2 p + q at (m, n), and an impulse at (c, c) reaches it through
        W'[., ., c - m + 1, c - n + 1]."""
        tail, c0 = self.net.tail, self.net.tail.in_channels
        size, c = 9, 4  # far enough from the border that the probe sees no padding
        impulses = torch.zeros(c0, c0, size, size)
        impulses[torch.arange(c0), torch.arange(c0), c, c] = 1.0
        with torch.no_grad():
            response = F.conv2d(self.net._up(impulses), tail.weight, None, padding=1)  # (C, 3, 2s, 2s)
        weights = torch.zeros(4 * tail.out_channels, c0, 3, 3)
        rgb = torch.arange(tail.out_channels)
        for p in range(2):
            for q in range(2):
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        weights[rgb * 4 + p * 2 + q, :, dy + 1, dx + 1] = response[
                            :, :, 2 * (c - dy) + p, 2 * (c - dx) + q
                        ].T
        return weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return at_scale(self.native, x, self.net.config.scale)

    def native(self, x: torch.Tensor) -> torch.Tensor:
        f0, half, _ = self.net.features(x)
        rgb = self.net.tail.out_channels
        upsampled = F.pixel_shuffle(self.phase_tail(F.pad(half, (1, 1, 1, 1), mode="replicate"))[:, : 4 * rgb], 2)
        # Residual first, input last: the graph's final addition stays float in INT8 (engine.quantize.float_nodes),
        # so the input is never quantized and the 3-channel head conv stays float.
        return x + (self.tail(f0)[:, :rgb] + upsampled)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int = 512) -> int:
    """Multiply-accumulates of all convolutions for one size x size image (hooks, one forward)."""
    total = 0

    def hook(module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if not isinstance(module, nn.Conv2d):
            return
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += int(out.numel()) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return total
