"""The Mobius UNet3D written independently in PyTorch: the parity oracle and the PyTorch peer.

The same layers, shapes and parameter names as src/Mobius.Model (see docs/ops.md for the op math),
in both topologies:
  serial:   h' = TA(SA(TC(R(h, e)), c))
  parallel: s' = SA(R(s, e), c) under no_grad;  t' = TA(TC(t + s'));  eps = out(s_L) + fuse(t_L)
            (the additive bridge)
  skip:     parallel, and the ring keeps skip connections where the UNet does: a decoder block's ring
            input adds its encoder twin's ring state (1x1 conv where channels differ) (the skip bridge)
  delta:    skip, but the ring carries only the temporal layers' corrections d:  t = TA(TC(s' + d)),
            d' = t - s';  eps = out(s_L) + fuse(s_L + d_L)  (the delta bridge)
  loop:     serial's values; every spatial layer under no_grad, its input given the gradient of its
            skip path alone (straight through: v + (k - k.detach()), k = identity or the 1x1 shortcut)
            (the parallel topology's loop bridge, Mobius's default)

`python3 mobius_torch.py fixtures OUT_DIR` writes the parity fixtures the C# tests compare against
(float64 reference: outputs, loss and every trainable gradient, for the micro config).
`python3 mobius_torch.py bench --device cpu|cuda --config tiny --steps N [--bridge loop|additive|skip|delta]` is
the PyTorch peer of `mobius compare`: serial and parallel training steps on random data, one JSON object.
Runs on Debian's python3-torch (1.13, CPU); needs nothing else.
"""
import json
import math
import struct
import sys

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

# ---------------------------------------------------------------------------------------------
# safetensors, minimal (the format: u64 header length, JSON header, raw little-endian data)


def save_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[b:end]), dtype=torch.float32).reshape(e["shape"]).clone()
    return out, meta


# ---------------------------------------------------------------------------------------------
# configs (mirror ModelConfig presets)

CONFIGS = {
    "micro": dict(channels=[16, 32], layers=1, attention=[True, True], head_dim=8, groups=4, ff_mult=4,
                  text_width=16, text_layers=1, text_heads=2, tokens=14, frames=4, height=16, width=16, batch=2),
    "tiny": dict(channels=[32, 64, 64], layers=1, attention=[True, True, True], head_dim=32, groups=8, ff_mult=4,
                 text_width=64, text_layers=2, text_heads=2, tokens=16, frames=8, height=32, width=32, batch=2),
    "small": dict(channels=[64, 128, 256], layers=2, attention=[True, True, True], head_dim=32, groups=16, ff_mult=4,
                  text_width=256, text_layers=2, text_heads=4, tokens=16, frames=16, height=64, width=64, batch=2),
    "ms256": dict(channels=[320, 640, 1280, 1280], layers=2, attention=[True, True, True, False], head_dim=64, groups=32,
                  ff_mult=4, text_width=1024, text_layers=2, text_heads=16, tokens=77, frames=16, height=64, width=64, batch=1),
}
LATENT = 12


# ---------------------------------------------------------------------------------------------
# parameters: a flat name -> tensor dict, created in the shapes the C# model uses


class Params:
    def __init__(self, gen, dtype):
        self.p, self.gen, self.dtype = {}, gen, dtype

    def uniform(self, name, shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        self.p[name] = (torch.rand(shape, generator=self.gen, dtype=self.dtype) * 2 - 1) * bound

    def const(self, name, shape, v):
        self.p[name] = torch.full(shape, float(v), dtype=self.dtype)

    def linear(self, name, i, o, bias=True):
        self.uniform(name + ".weight", (o, i), i)
        if bias:
            self.uniform(name + ".bias", (o,), i)

    def conv(self, name, i, o, k):
        self.uniform(name + ".weight", (o, i, k, k), i * k * k)
        self.uniform(name + ".bias", (o,), i * k * k)

    def norm(self, name, c):
        # gamma/beta perturbed from 1/0 so the fixture exercises them
        self.p[name + ".weight"] = 1 + 0.1 * (torch.rand((c,), generator=self.gen, dtype=self.dtype) * 2 - 1)
        self.p[name + ".bias"] = 0.1 * (torch.rand((c,), generator=self.gen, dtype=self.dtype) * 2 - 1)


def make_block_params(P, cfg, name, cin, cout, attention, temporal):
    c0 = cfg["channels"][0]
    P.norm(f"{name}.res.norm1", cin)
    P.conv(f"{name}.res.conv1", cin, cout, 3)
    P.linear(f"{name}.res.time_emb_proj", 4 * c0, cout)
    P.norm(f"{name}.res.norm2", cout)
    P.conv(f"{name}.res.conv2", cout, cout, 3)
    if cin != cout:
        P.conv(f"{name}.res.conv_shortcut", cin, cout, 1)
    if attention:
        make_transformer_params(P, cfg, f"{name}.attn", cout, cfg["text_width"])
    if temporal:
        for i in range(1, 5):
            P.norm(f"{name}.temp_conv.norm{i}", cout)
            P.uniform(f"{name}.temp_conv.conv{i}_weight", (cout, cout, 3), cout * 3)
            P.uniform(f"{name}.temp_conv.conv{i}_bias", (cout,), cout * 3)
        if attention:
            make_transformer_params(P, cfg, f"{name}.temp_attn", cout, 0)


def make_transformer_params(P, cfg, name, c, ctx):
    P.norm(f"{name}.norm", c)
    P.linear(f"{name}.proj_in", c, c)
    make_block_core(P, f"{name}.block", c, ctx, cfg["ff_mult"])
    P.linear(f"{name}.proj_out", c, c)


def make_block_core(P, name, c, ctx, mult):
    P.norm(f"{name}.norm1", c)
    for k, i in (("to_q", c), ("to_k", c), ("to_v", c)):
        P.linear(f"{name}.attn1.{k}", i, c, bias=False)
    P.linear(f"{name}.attn1.to_out", c, c)
    if ctx:
        P.norm(f"{name}.norm2", c)
        for k, i in (("to_q", c), ("to_k", ctx), ("to_v", ctx)):
            P.linear(f"{name}.attn2.{k}", i, c, bias=False)
        P.linear(f"{name}.attn2.to_out", c, c)
    P.norm(f"{name}.norm3", c)
    P.linear(f"{name}.ff.proj_in", c, 2 * mult * c)
    P.linear(f"{name}.ff.proj_out", mult * c, c)


def plan(cfg):
    """The block/down/up program of UNet3D, with each block's (list, index, cin, cout, attention, pop, push)."""
    steps, ch, skips, counts = [], cfg["channels"][0], [cfg["channels"][0]], {"down": 0, "mid": 0, "up": 0}

    def block(lst, cin, cout, attn, pop, push):
        steps.append(("block", f"{lst}.{counts[lst]}", cin, cout, attn, pop, push))
        counts[lst] += 1

    levels = len(cfg["channels"])
    nd = 0
    for l in range(levels):
        for _ in range(cfg["layers"]):
            block("down", ch, cfg["channels"][l], cfg["attention"][l], False, True)
            ch = cfg["channels"][l]
            skips.append(ch)
        if l < levels - 1:
            steps.append(("down", f"downsample.{nd}", ch, ch, False, False, True))
            nd += 1
            skips.append(ch)
    block("mid", ch, ch, True, False, False)
    block("mid", ch, ch, False, False, False)
    nu = 0
    for l in reversed(range(levels)):
        for _ in range(cfg["layers"] + 1):
            block("up", ch + skips.pop(), cfg["channels"][l], cfg["attention"][l], True, False)
            ch = cfg["channels"][l]
        if l > 0:
            steps.append(("up", f"upsample.{nu}", ch, ch, False, False, False))
            nu += 1
    return steps


def make_unet_params(cfg, topology, gen, dtype):
    P = Params(gen, dtype)
    c0 = cfg["channels"][0]
    temporal = topology != "spatial"
    P.conv("conv_in", LATENT, c0, 3)
    P.linear("time_embedding.linear_1", c0, 4 * c0)
    P.linear("time_embedding.linear_2", 4 * c0, 4 * c0)
    outs = []
    for kind, name, cin, cout, attn, _, _ in plan(cfg):
        if kind == "block":
            make_block_params(P, cfg, name, cin, cout, attn, temporal)
            outs.append(cout)
        else:
            P.conv(f"{name}.conv", cin, cout, 3)
    P.norm("norm_out", c0)
    P.conv("conv_out", c0, LATENT, 3)
    if topology in ("parallel", "skip", "delta"):
        k = 0
        for b in range(1, len(outs)):
            if outs[b] != outs[b - 1]:
                P.conv(f"ring_proj.{k}", outs[b - 1], outs[b], 1)
                k += 1
        if topology in ("skip", "delta"):
            # the ring's own skips: a decoder block adds the ring state of its encoder twin, through a 1x1
            # conv where the channels differ; conv_in's skip (the last block's) has no ring state
            stack, j = [None], 0
            for kind, _, cin, cout, _, pop, push in plan(cfg):
                if pop:
                    ch = stack.pop()
                    if ch is not None and ch != cout:
                        P.conv(f"ring_skip_proj.{j}", ch, cout, 1)
                        j += 1
                if push:
                    stack.append(cout)
        P.norm("bridge.fuse_norm", outs[-1])
        P.conv("bridge.fuse_conv", outs[-1], LATENT, 3)
    return P.p


def is_temporal(name):
    return (".temp_conv." in name or ".temp_attn." in name or name.startswith("ring_proj.") or name.startswith("ring_skip_proj.")
            or name.startswith("bridge."))


# ---------------------------------------------------------------------------------------------
# the forward pass, written from docs/ops.md


def group_norm(x, w, b, groups, frames=1, eps=1e-5):
    nt, c = x.shape[0], x.shape[1]
    n = nt // frames
    y = x.reshape(n, frames, groups, c // groups, -1)
    mean = y.mean(dim=(1, 3, 4), keepdim=True)
    var = y.var(dim=(1, 3, 4), keepdim=True, unbiased=False)
    y = ((y - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    shape = [1, c] + [1] * (x.dim() - 2)
    return y * w.reshape(shape) + b.reshape(shape)


def linear(p, name, x):
    return F.linear(x, p[name + ".weight"], p.get(name + ".bias"))


def conv(p, name, x, stride=1):
    w = p[name + ".weight"]
    return F.conv2d(x, w, p[name + ".bias"], stride=stride, padding=w.shape[-1] // 2)


def attention(q, k, v, heads):
    n, lq, w = q.shape
    d = w // heads
    q = q.reshape(n, lq, heads, d).transpose(1, 2)
    k = k.reshape(n, k.shape[1], heads, d).transpose(1, 2)
    v = v.reshape(n, v.shape[1], heads, d).transpose(1, 2)
    s = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return (s @ v).transpose(1, 2).reshape(n, lq, w)


def sinusoid(pos, dim, dtype):
    half = dim // 2
    freq = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64, device=pos.device) / half)
    a = pos.to(torch.float64)[:, None] * freq[None, :]
    return torch.cat([torch.cos(a), torch.sin(a)], dim=1).to(dtype)


def attn_layer(p, name, x, ctx, heads):
    kv = x if ctx is None else ctx
    o = attention(linear(p, name + ".to_q", x), linear(p, name + ".to_k", kv), linear(p, name + ".to_v", kv), heads)
    return linear(p, name + ".to_out", o)


def block_core(p, name, x, ctx, heads):
    ln = lambda n, t: F.layer_norm(t, (t.shape[-1],), p[n + ".weight"], p[n + ".bias"], 1e-5)
    h = x + attn_layer(p, name + ".attn1", ln(name + ".norm1", x), None, heads)
    if ctx is not None:
        h = h + attn_layer(p, name + ".attn2", ln(name + ".norm2", h), ctx, heads)
    f = linear(p, name + ".ff.proj_in", ln(name + ".norm3", h))
    a, g = f.chunk(2, dim=-1)
    return h + linear(p, name + ".ff.proj_out", a * F.gelu(g, approximate="tanh"))


def res_block(p, cfg, name, x, e):
    g = cfg["groups"]
    h = conv(p, name + ".conv1", F.silu(group_norm(x, p[name + ".norm1.weight"], p[name + ".norm1.bias"], g)))
    h = h + linear(p, name + ".time_emb_proj", e)[:, :, None, None]
    h = conv(p, name + ".conv2", F.silu(group_norm(h, p[name + ".norm2.weight"], p[name + ".norm2.bias"], g)))
    skip = conv(p, name + ".conv_shortcut", x) if name + ".conv_shortcut.weight" in p else x
    return skip + h


def spatial_transformer(p, cfg, name, x, ctx):
    n, c, hh, ww = x.shape
    h = group_norm(x, p[name + ".norm.weight"], p[name + ".norm.bias"], cfg["groups"])
    h = linear(p, name + ".proj_in", h.reshape(n, c, hh * ww).transpose(1, 2))
    h = block_core(p, name + ".block", h, ctx, c // cfg["head_dim"])
    h = linear(p, name + ".proj_out", h).transpose(1, 2).reshape(n, c, hh, ww)
    return x + h


def temporal_conv(p, cfg, name, x, frames):
    bf, c, hh, ww = x.shape
    h = x
    for i in range(1, 5):
        h = F.silu(group_norm(h, p[f"{name}.norm{i}.weight"], p[f"{name}.norm{i}.bias"], cfg["groups"], frames))
        w = p[f"{name}.conv{i}_weight"]
        t = h.reshape(bf // frames, frames, c, hh * ww).permute(0, 2, 1, 3)  # [B, C, F, S]
        t = F.conv2d(t, w[:, :, :, None], p[f"{name}.conv{i}_bias"], padding=(1, 0))
        h = t.permute(0, 2, 1, 3).reshape(bf, w.shape[0], hh, ww)
    return x + h


def temporal_transformer(p, cfg, name, x, frames):
    bf, c, hh, ww = x.shape
    b, s = bf // frames, hh * ww
    h = group_norm(x, p[name + ".norm.weight"], p[name + ".norm.bias"], cfg["groups"], frames)
    h = h.reshape(b, frames * c, s).transpose(1, 2).reshape(b * s, frames, c)
    h = linear(p, name + ".proj_in", h)
    h = h + sinusoid(torch.arange(frames, device=x.device), c, x.dtype)[None]
    h = block_core(p, name + ".block", h, None, c // cfg["head_dim"])
    h = linear(p, name + ".proj_out", h)
    h = h.reshape(b, s, frames * c).transpose(1, 2).reshape(bf, c, hh, ww)
    return x + h


def unet_forward(p, cfg, topology, x, timesteps, ctx, frames, recompute_spatial=False):
    c0 = cfg["channels"][0]
    with torch.set_grad_enabled(torch.is_grad_enabled() and topology not in ("parallel", "skip", "delta", "loop")):
        e = linear(p, "time_embedding.linear_1", sinusoid(timesteps, c0, x.dtype))
        e = F.silu(linear(p, "time_embedding.linear_2", F.silu(e)))
    steps = plan(cfg)

    def spatial(name, h, attn):
        h = res_block(p, cfg, name + ".res", h, e)
        return spatial_transformer(p, cfg, name + ".attn", h, ctx) if attn else h

    def temporal(name, h, attn):
        h = temporal_conv(p, cfg, name + ".temp_conv", h, frames)
        return temporal_transformer(p, cfg, name + ".temp_attn", h, frames) if attn else h

    def out_head(h):
        return conv(p, "conv_out", F.silu(group_norm(h, p["norm_out.weight"], p["norm_out.bias"], cfg["groups"])))

    def bypass(f, h, shortcut=None):
        with torch.no_grad():
            v = f(h)
        if not h.requires_grad:
            return v
        k = h if shortcut is None else conv(p, shortcut, h)
        return v + (k - k.detach())

    def recomputed(f, h, shortcut=None):
        # serial with activation checkpointing of each frozen spatial layer (the engine's --recompute-spatial)
        return torch.utils.checkpoint.checkpoint(f, h, use_reentrant=True) if h.requires_grad else f(h)

    if topology in ("spatial", "serial", "loop"):
        # serial: h' = TA(SA(TC(R(h, e)), c)); loop: the same values, each spatial layer bypassed
        run = bypass if topology == "loop" else (recomputed if recompute_spatial else (lambda f, h, shortcut=None: f(h)))
        h = conv(p, "conv_in", x)
        skips = [h]
        for kind, name, _, _, attn, pop, push in steps:
            if kind == "block":
                if pop:
                    h = torch.cat([h, skips.pop()], dim=1)
                if topology == "spatial":
                    h = spatial(name, h, attn)
                else:
                    sc = name + ".res.conv_shortcut" if name + ".res.conv_shortcut.weight" in p else None
                    h = run(lambda t, name=name: res_block(p, cfg, name + ".res", t, e), h, sc)  # bound now: a checkpoint calls it again in backward
                    h = temporal_conv(p, cfg, name + ".temp_conv", h, frames)
                    if attn:
                        h = run(lambda t, name=name: spatial_transformer(p, cfg, name + ".attn", t, ctx), h)
                        h = temporal_transformer(p, cfg, name + ".temp_attn", h, frames)
            elif kind == "down":
                h = conv(p, name + ".conv", h, stride=2)
            else:
                h = conv(p, name + ".conv", F.interpolate(h, scale_factor=2, mode="nearest"))
            if push:
                skips.append(h)
        return out_head(h)

    # parallel: spatial chain without a graph, temporal ring with one ("skip": the ring keeps skips too)
    ring, k, j, ring_skips = None, 0, 0, [None]
    with torch.no_grad():
        s = conv(p, "conv_in", x)
    skips = [s]
    for kind, name, _, cout, attn, pop, push in steps:
        with torch.no_grad():
            if kind == "block":
                if pop:
                    s = torch.cat([s, skips.pop()], dim=1)
                s = spatial(name, s, attn)
            elif kind == "down":
                s = conv(p, name + ".conv", s, stride=2)
            else:
                s = conv(p, name + ".conv", F.interpolate(s, scale_factor=2, mode="nearest"))
            if push:
                skips.append(s)
        rs = ring_skips.pop() if topology in ("skip", "delta") and pop else None
        if kind == "block":
            if ring is not None and ring.shape[1] != cout:
                ring = conv(p, f"ring_proj.{k}", ring)
                k += 1
            if ring is not None and rs is not None:
                if rs.shape[1] != cout:
                    rs = conv(p, f"ring_skip_proj.{j}", rs)
                    j += 1
                ring = ring + rs
            u = s if ring is None else ring + s
            ring = temporal(name, u, attn)
            if topology == "delta":
                ring = ring - s
        elif ring is not None:
            ring = F.avg_pool2d(ring, 2) if kind == "down" else F.interpolate(ring, scale_factor=2, mode="nearest")
        if topology in ("skip", "delta") and push:
            ring_skips.append(ring)
    with torch.no_grad():
        so = out_head(s)
    if topology == "delta":
        ring = ring + s
    fuse = conv(p, "bridge.fuse_conv", F.silu(group_norm(ring, p["bridge.fuse_norm.weight"], p["bridge.fuse_norm.bias"], cfg["groups"])))
    return so + fuse


def text_encoder_forward(p, cfg, ids):
    b, l = ids.shape
    d = cfg["text_width"]
    h = p["token_embedding.weight"][ids] + p["position_embedding"].reshape(l, d)[None]
    for i in range(cfg["text_layers"]):
        h = block_core(p, f"layer{i}", h, None, cfg["text_heads"])
    return F.layer_norm(h, (d,), p["final_norm.weight"], p["final_norm.bias"], 1e-5)


def make_text_params(cfg, vocab, gen, dtype):
    P = Params(gen, dtype)
    d = cfg["text_width"]
    P.p["token_embedding.weight"] = torch.randn((vocab, d), generator=gen, dtype=dtype) * 0.5
    P.p["position_embedding"] = torch.randn((cfg["tokens"] * d,), generator=gen, dtype=dtype) * 0.5
    for i in range(cfg["text_layers"]):
        make_block_core(P, f"layer{i}", d, 0, 4)
    P.norm("final_norm", d)
    return P.p


def fp32_exact(t):
    """Round to float32 and compute in float64: the C# side sees exactly these values."""
    return t.float().double()


def write_fixtures(out_dir, config="micro", seed=20261125):
    torch.set_num_threads(1)
    cfg = CONFIGS[config]
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    b, f, h, w = cfg["batch"], cfg["frames"], cfg["height"] // 2, cfg["width"] // 2
    def unet_fixture(topology, gen):
        p = {k: fp32_exact(v) for k, v in make_unet_params(cfg, topology, gen, dt).items()}
        x = fp32_exact(torch.randn((b * f, LATENT, h, w), generator=gen, dtype=dt))
        steps = torch.randint(0, 1000, (b,), generator=gen).repeat_interleave(f)
        ctx = fp32_exact(torch.randn((b * f, cfg["tokens"], cfg["text_width"]), generator=gen, dtype=dt))
        target = fp32_exact(torch.randn(x.shape, generator=gen, dtype=dt))
        for k, v in p.items():
            v.requires_grad_(is_temporal(k))
        eps = unet_forward(p, cfg, topology, x, steps, ctx, f)
        loss = F.mse_loss(eps, target)
        loss.backward()
        out = {f"param.{k}": v for k, v in p.items()}
        out.update({"input.x": x, "input.timesteps": steps.double(), "input.context": ctx, "input.target": target,
                    "output.eps": eps, "output.loss": loss.reshape(1)})
        out.update({f"grad.{k}": v.grad for k, v in p.items() if v.grad is not None})
        path = f"{out_dir}/unet3d_{config}_{topology}.safetensors"
        save_safetensors(path, out, {"config": config, "topology": topology, "seed": seed, "torch": torch.__version__})
        print(f"{path}: loss {loss.item():.6f}, {sum(1 for k in out if k.startswith('grad.'))} gradients")

    for topology in ("serial", "parallel"):
        unet_fixture(topology, gen)

    vocab = 23
    p = {k: fp32_exact(v) for k, v in make_text_params(cfg, vocab, gen, dt).items()}
    ids = torch.randint(0, vocab, (b, cfg["tokens"]), generator=gen)
    target = fp32_exact(torch.randn((b, cfg["tokens"], cfg["text_width"]), generator=gen, dtype=dt))
    for v in p.values():
        v.requires_grad_(True)
    ctx = text_encoder_forward(p, cfg, ids)
    loss = F.mse_loss(ctx, target)
    loss.backward()
    out = {f"param.{k}": v for k, v in p.items()}
    out.update({"input.ids": ids.double(), "input.target": target, "output.context": ctx, "output.loss": loss.reshape(1)})
    out.update({f"grad.{k}": v.grad for k, v in p.items()})
    path = f"{out_dir}/text_encoder_{config}.safetensors"
    save_safetensors(path, out, {"config": config, "vocab": vocab, "seed": seed, "torch": torch.__version__})
    print(f"{path}: loss {loss.item():.6f}")

    # The loop bridge came later: its own generator, so the fixtures above stay as they were; so did the
    # ring with skips.
    unet_fixture("loop", torch.Generator().manual_seed(seed + 1))
    unet_fixture("skip", torch.Generator().manual_seed(seed + 2))
    unet_fixture("delta", torch.Generator().manual_seed(seed + 3))


def resident_bytes(params, opt):
    """Bytes of a model's weights and optimizer state."""
    tensors = list(params.values()) + [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


def bench(device, config, steps, warmup, seed=1, bridge="loop", recompute_spatial=False, math="fp32"):
    """Serial and parallel training steps of the same model on random data, alternating, as Mobius
    measures them: median step time, peak memory (CUDA: max_memory_allocated) and the bytes autograd
    saves for backward (unique storages seen by saved_tensors_hooks). With recompute_spatial the serial
    topology checkpoints each frozen spatial layer (torch.utils.checkpoint). math is the engine's --math: fp32
    (strict), tf32 (allow_tf32 in cuBLAS and cuDNN) or bf16 (fp32 matmuls on bf16 tensor cores,
    set_float32_matmul_precision("medium"), convolutions in TF32). Prints one JSON object."""
    import statistics
    import time

    cfg = CONFIGS[config]
    dev = torch.device(device)
    # Strict fp32 like the engine (cuBLAS default math, cuDNN FMA math), or its tensor-core modes (--math).
    torch.set_float32_matmul_precision({"fp32": "highest", "tf32": "high", "bf16": "medium"}[math])
    torch.backends.cuda.matmul.allow_tf32 = math == "tf32"
    torch.backends.cudnn.allow_tf32 = math != "fp32"
    gen = torch.Generator().manual_seed(seed)
    b, f, h, w = cfg["batch"], cfg["frames"], cfg["height"] // 2, cfg["width"] // 2
    runs = {}
    # "parallel" is the reading the bridge names: the loop, the additive ring, or the ring with skips.
    forward_of = {"serial": "serial", "parallel": {"loop": "loop", "skip": "skip", "delta": "delta"}.get(bridge, "parallel")}
    for topology in ("serial", "parallel"):
        p = {k: v.to(torch.float32).to(dev) for k, v in make_unet_params(cfg, forward_of[topology], gen, torch.float32).items()}
        trainable = [v for k, v in p.items() if is_temporal(k)]
        for v in trainable:
            v.requires_grad_(True)
        opt = torch.optim.AdamW(trainable, lr=1e-4)
        runs[topology] = (p, opt)

    x = torch.randn((b * f, LATENT, h, w), generator=gen).to(dev)
    target = torch.randn(x.shape, generator=gen).to(dev)
    ctx = torch.randn((b * f, cfg["tokens"], cfg["text_width"]), generator=gen).to(dev)
    t = torch.randint(0, 1000, (b,), generator=gen).repeat_interleave(f).to(dev)
    times = {k: [] for k in runs}
    saved = {}
    peak = {}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for step in range(warmup + steps):
        for topology, (p, opt) in runs.items():
            storages = {}

            def pack(tensor):
                if hasattr(tensor, "untyped_storage"):  # torch 2
                    st = tensor.untyped_storage()
                    storages[st.data_ptr()] = st.nbytes()
                else:
                    st = tensor.storage()
                    storages[st.data_ptr()] = st.size() * st.element_size()
                return tensor

            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync()
            start = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                eps = unet_forward(p, cfg, forward_of[topology], x, t, ctx, f, recompute_spatial)
                loss = F.mse_loss(eps, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([v for v in p.values() if v.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            if step >= warmup:
                times[topology].append((time.perf_counter() - start) * 1000)
            param_ptrs = {(v.untyped_storage() if hasattr(v, "untyped_storage") else v.storage()).data_ptr() for v in p.values()}
            saved[topology] = sum(n for ptr, n in storages.items() if ptr not in param_ptrs)
            if dev.type == "cuda":
                # Both topologies stay resident, so the other's weights and optimizer state are not this one's.
                other_p, other_opt = next(r for k, r in runs.items() if k != topology)
                peak[topology] = torch.cuda.max_memory_allocated() - resident_bytes(other_p, other_opt)

    out = {"peer": f"pytorch {torch.__version__}", "device": device, "config": config, "bridge": bridge, "steps": steps,
           "recompute_spatial": recompute_spatial, "math": math,
           "threads": torch.get_num_threads()}
    for topology in runs:
        out[topology] = {"step_ms_median": statistics.median(times[topology]), "saved_activation_bytes": saved[topology],
                         "peak_bytes": peak.get(topology)}
    out["ratio"] = {"step_ms": out["parallel"]["step_ms_median"] / out["serial"]["step_ms_median"],
                    "saved_activation_bytes": saved["parallel"] / saved["serial"]}
    if peak:
        out["ratio"]["peak_bytes"] = peak["parallel"] / peak["serial"]
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "fixtures":
        write_fixtures(sys.argv[2])
    elif len(sys.argv) >= 2 and sys.argv[1] == "bench":
        import argparse

        a = argparse.ArgumentParser(prog="mobius_torch.py bench")
        a.add_argument("--device", default="cpu")
        a.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
        a.add_argument("--steps", type=int, default=10)
        a.add_argument("--warmup", type=int, default=2)
        a.add_argument("--threads", type=int, default=0)
        a.add_argument("--bridge", default="loop", choices=["loop", "additive", "skip", "delta"])
        a.add_argument("--recompute-spatial", action="store_true")
        a.add_argument("--math", default="fp32", choices=["fp32", "tf32", "bf16"], help="the engine's --math: strict fp32, TF32, or bf16 matmuls")
        args = a.parse_args(sys.argv[2:])
        if args.threads:
            torch.set_num_threads(args.threads)
        bench(args.device, args.config, args.steps, args.warmup, bridge=args.bridge, recompute_spatial=args.recompute_spatial, math=args.math)
    else:
        print(__doc__)
        sys.exit(2)
