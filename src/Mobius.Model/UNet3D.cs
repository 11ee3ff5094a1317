using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;
using Mobius.Model.Layers;

namespace Mobius.Model;

/// <summary>How the temporal layers are wired to the spatial (text-to-image) layers.</summary>
public enum Topology
{
    /// <summary>The text-to-image UNet alone, frames as a batch of images (stage 1, and the reference).</summary>
    Spatial,

    /// <summary>The usual 3D-UNet: temporal layers follow spatial layers; gradients flow through both.</summary>
    Serial,

    /// <summary>
    /// Mobius: a spatial chain (inference-only) and a temporal ring side by side; gradients flow only
    /// through the temporal layers. How the two meet is the config's <see cref="ModelConfig.Bridge"/>.
    /// </summary>
    Parallel,
}

/// <summary>
/// Which spatial layers the loop bridge runs inference-only (<see cref="UNetBlock.Loop"/>). Anything but
/// <see cref="All"/> puts the others back on the tape with their activations: a diagnostic of where the
/// loop's gradient departs from serial's (benchmarks' `alignment`), not a topology.
/// </summary>
[Flags]
public enum LoopBypass
{
    /// <summary>Every spatial layer on the tape (serial's gradient).</summary>
    None = 0,

    /// <summary>ResBlocks inference-only.</summary>
    ResBlocks = 1,

    /// <summary>Spatial transformers inference-only.</summary>
    Transformers = 2,

    /// <summary>Every spatial layer inference-only: the loop bridge.</summary>
    All = ResBlocks | Transformers,
}

/// <summary>
/// One block of the UNet: a spatial pair (ResBlock2D, optional SpatialTransformer) and a temporal pair
/// (TemporalConv, optional TemporalTransformer). The two topologies differ only in how these four
/// layers are chained; both are here, side by side.
/// </summary>
public sealed class UNetBlock : Module
{
    /// <summary>Creates the block; <paramref name="temporal"/> = false builds the text-to-image block only.</summary>
    public UNetBlock(IBackend backend, Random rng, ModelConfig config, int inChannels, int outChannels, bool attention, bool temporal)
        : base(backend)
    {
        int embed = 4 * config.Channels[0];
        Res = AddModule("res", new ResBlock2D(backend, rng, inChannels, outChannels, embed, config.Groups));
        Attn = attention ? AddModule("attn", new SpatialTransformer(backend, rng, outChannels, config.HeadDim, config.TextWidth, config.Groups, config.FfMult)) : null;
        if (temporal)
        {
            TempConv = AddModule("temp_conv", new TemporalConvLayer(backend, rng, outChannels, config.Groups));
            TempAttn = attention ? AddModule("temp_attn", new TemporalTransformer(backend, rng, outChannels, config.HeadDim, config.Groups, config.FfMult)) : null;
        }

        OutChannels = outChannels;
    }

    /// <summary>Channels this block outputs.</summary>
    public int OutChannels { get; }

    /// <summary>Spatial residual block.</summary>
    public ResBlock2D Res { get; }

    /// <summary>Spatial transformer, or null.</summary>
    public SpatialTransformer? Attn { get; }

    /// <summary>Temporal convolution layer, or null in a text-to-image block.</summary>
    public TemporalConvLayer? TempConv { get; }

    /// <summary>Temporal transformer, or null.</summary>
    public TemporalTransformer? TempAttn { get; }

    /// <summary>
    /// Whether the spatial layers (ResBlock, spatial transformer) keep only their inputs for backward and run
    /// again there, where gradients cross them (<see cref="Ops.Recompute"/>; set through <see cref="UNet3D.RecomputeSpatial"/>).
    /// </summary>
    internal bool RecomputeSpatial { get; set; }

    /// <summary>The same for the temporal layers (set through <see cref="UNet3D.RecomputeTemporal"/>).</summary>
    internal bool RecomputeTemporal { get; set; }

    /// <summary>Serial 3D-UNet: h' = TA(SA(TC(R(h, e)), c)). Gradients to the temporal layers cross every spatial layer.</summary>
    public Tensor Serial(Tensor h, Tensor e, Tensor c, int frames)
    {
        var x = ResLayer(h, e).Then(t => TempConvLayer(t, frames));
        return Attn is null ? x : x.Then(t => AttnLayer(t, c)).Then(t => TempAttnLayer(t, frames));
    }

    /// <summary>Spatial chain (and the text-to-image UNet): s' = SA(R(s, e), c).</summary>
    public Tensor Spatial(Tensor s, Tensor e, Tensor c)
    {
        var x = ResLayer(s, e);
        return Attn is null ? x : x.Then(t => AttnLayer(t, c));
    }

    /// <summary>Temporal ring: t' = TA(TC(u)), u = the bridged ring input.</summary>
    public Tensor Temporal(Tensor u, int frames)
    {
        var x = TempConvLayer(u, frames);
        return TempAttn is null ? x : x.Then(t => TempAttnLayer(t, frames));
    }

    /// <summary>
    /// The loop reading of the parallel topology: the values of <see cref="Serial"/>, but each spatial
    /// layer runs inference-only and hands its input the gradient of its skip path alone (identity, or
    /// the ResBlock's 1x1 shortcut), so gradients flow through the temporal layers and nothing of the
    /// spatial layers is kept.
    /// </summary>
    public Tensor Loop(Tensor h, Tensor e, Tensor c, int frames, LoopBypass bypass = LoopBypass.All)
    {
        var x = (bypass.HasFlag(LoopBypass.ResBlocks) ? Bypass(h, t => Res.Forward(t, e), Res.Shortcut, ResJacobian) : ResLayer(h, e))
            .Then(t => TempConvLayer(t, frames));
        return Attn is null ? x : x
            .Then(t => bypass.HasFlag(LoopBypass.Transformers) ? Bypass(t, u => Attn.Forward(u, c), null, AttnJacobian) : AttnLayer(t, c))
            .Then(t => TempAttnLayer(t, frames));
    }

    private Tensor ResLayer(Tensor h, Tensor e) =>
        RecomputeSpatial ? Recomputed(nameof(ResBlock2D), a => Res.Forward(a[0], a[1]), h, e) : Res.Forward(h, e);

    private Tensor AttnLayer(Tensor h, Tensor c) =>
        RecomputeSpatial ? Recomputed(nameof(SpatialTransformer), a => Attn!.Forward(a[0], a[1]), h, c) : Attn!.Forward(h, c);

    private Tensor TempConvLayer(Tensor h, int frames) =>
        RecomputeTemporal ? Recomputed("TemporalConv", a => TempConv!.Forward(a[0], frames), h) : TempConv!.Forward(h, frames);

    private Tensor TempAttnLayer(Tensor h, int frames) =>
        RecomputeTemporal ? Recomputed(nameof(TemporalTransformer), a => TempAttn!.Forward(a[0], frames), h) : TempAttn!.Forward(h, frames);

    /// <summary>A layer under <see cref="Ops.Recompute"/>, its kept inputs attributed to the layer's kind.</summary>
    private static Tensor Recomputed(string kind, Func<Tensor[], Tensor> layer, Tensor x, params Tensor[] others)
    {
        using var scope = Tape.Kind(kind);
        return Ops.Recompute(layer, x, others);
    }

    /// <summary>
    /// Experimental: the ResBlock's measured mean-field Jacobian (<see cref="UNet3D.BeginLoopJacobians"/>); once measured,
    /// the loop passes its gradient through it instead of the skip path. Owned by the block.
    /// </summary>
    internal LoopJacobian? ResJacobian { get; set; }

    /// <summary>Experimental: the same for the spatial transformer.</summary>
    internal LoopJacobian? AttnJacobian { get; set; }

    /// <inheritdoc />
    protected override void ReleaseOwned() => DropJacobians();

    /// <summary>Releases the measured Jacobians: the plain skip paths again.</summary>
    internal void DropJacobians()
    {
        ResJacobian?.Dispose();
        AttnJacobian?.Dispose();
        ResJacobian = null;
        AttnJacobian = null;
    }

    private static Tensor Bypass(Tensor h, Func<Tensor, Tensor> spatial, Conv2d? shortcut, LoopJacobian? jacobian)
    {
        if (jacobian is { Calibrating: true } && Tape.GradEnabled)
        {
            jacobian.Probe(h, spatial);
        }

        Tensor value;
        using (Tape.NoGrad())
        {
            value = spatial(h);
        }

        if (!h.RequiresGrad || !Tape.GradEnabled)
        {
            return value;
        }

        using (value)
        using (Tape.Kind(nameof(Layers.Bridge)))
        {
            if (jacobian?.Weight is { } mean)
            {
                if (jacobian.ImageMean is null)
                {
                    return Ops.StraightThroughConv2d(value, h, mean);
                }

                using var path = jacobian.Path(h);
                return Ops.StraightThrough(value, path);
            }

            if (shortcut is null)
            {
                return Ops.StraightThrough(value, h);
            }

            // The shortcut's gradient without its forward, whose value StraightThrough would throw away.
            return Ops.StraightThroughConv2d(value, h, shortcut.Weight, shortcut.Bias, shortcut.Stride, shortcut.Padding);
        }
    }
}

/// <summary>
/// A text-to-video 3D-UNet (ModelScope-T2V / diffusers UNet3DConditionModel shaped) in one of three
/// topologies. Spatial parameters have the same names in every topology, so one text-to-image
/// checkpoint loads into any of them.
/// </summary>
public sealed class UNet3D : Module
{
    private readonly List<Step> _plan = new();
    private readonly Dictionary<int, int> _ringProjection = new();
    private readonly Dictionary<int, int> _ringSkipProjection = new();

    /// <summary>Builds the network for <paramref name="config"/> in <paramref name="topology"/>, initialised from <paramref name="seed"/>.</summary>
    public UNet3D(IBackend backend, ModelConfig config, Topology topology, int seed)
        : base(backend)
    {
        config.Validate();
        Config = config;
        Topology = topology;
        var rng = new Random(seed);
        int c0 = config.Channels[0];
        bool temporal = topology != Topology.Spatial;

        ConvIn = AddModule("conv_in", new Conv2d(backend, rng, config.LatentChannels, c0, 3));
        Time = AddModule("time_embedding", new TimestepEmbedding(backend, rng, c0, 4 * c0));
        Down = AddModule("down", new ModuleList<UNetBlock>(backend));
        Downsamplers = AddModule("downsample", new ModuleList<Downsample>(backend));
        Mid = AddModule("mid", new ModuleList<UNetBlock>(backend));
        Up = AddModule("up", new ModuleList<UNetBlock>(backend));
        Upsamplers = AddModule("upsample", new ModuleList<Upsample>(backend));

        int ch = c0;
        var skips = new Stack<int>([c0]);
        var blockChannels = new List<int>();
        var skipChannels = new Dictionary<int, int>(); // decoder block ordinal -> channels of the skip it joins
        void Block(ModuleList<UNetBlock> list, int level, int inCh, int outCh, bool attention, bool pop, bool push)
        {
            list.Add(new UNetBlock(backend, rng, config, inCh, outCh, attention, temporal));
            _plan.Add(new Step(StepKind.Block, list, list.Count - 1, pop, push, blockChannels.Count, level));
            blockChannels.Add(outCh);
        }

        int levels = config.Channels.Length;
        for (int l = 0; l < levels; l++)
        {
            for (int j = 0; j < config.LayersPerLevel; j++)
            {
                Block(Down, l, ch, config.Channels[l], config.Attention[l], pop: false, push: true);
                ch = config.Channels[l];
                skips.Push(ch);
            }

            if (l < levels - 1)
            {
                Downsamplers.Add(new Downsample(backend, rng, ch));
                _plan.Add(new Step(StepKind.Down, null, Downsamplers.Count - 1, false, true, -1, l));
                skips.Push(ch);
            }
        }

        Block(Mid, levels - 1, ch, ch, attention: true, pop: false, push: false);
        Block(Mid, levels - 1, ch, ch, attention: false, pop: false, push: false);

        for (int l = levels - 1; l >= 0; l--)
        {
            for (int j = 0; j <= config.LayersPerLevel; j++)
            {
                int skip = skips.Pop();
                skipChannels[blockChannels.Count] = skip;
                Block(Up, l, ch + skip, config.Channels[l], config.Attention[l], pop: true, push: false);
                ch = config.Channels[l];
            }

            if (l > 0)
            {
                Upsamplers.Add(new Upsample(backend, rng, ch));
                _plan.Add(new Step(StepKind.Up, null, Upsamplers.Count - 1, false, false, -1, l));
            }
        }

        NormOut = AddModule("norm_out", new GroupNorm(backend, config.Groups, c0));
        ConvOut = AddModule("conv_out", new Conv2d(backend, rng, c0, config.LatentChannels, 3));

        if (topology == Topology.Parallel && !IsLoop)
        {
            // The ring carries its state from block to block; where the channel count changes, a
            // trainable 1x1 convolution adapts it (resolution changes need no parameters).
            RingProjections = AddModule("ring_proj", new ModuleList<Conv2d>(backend));
            for (int b = 1; b < blockChannels.Count; b++)
            {
                if (blockChannels[b] != blockChannels[b - 1])
                {
                    _ringProjection[b] = RingProjections.Count;
                    RingProjections.Add(new Conv2d(backend, rng, blockChannels[b - 1], blockChannels[b], 1));
                }
            }

            var bridge = Layers.Bridge.Create(config.Bridge, backend, rng, blockChannels.ToArray(), config.LatentChannels, config.Groups);
            if (bridge.RingSkips)
            {
                // A decoder block joins the ring state of its encoder twin; a 1x1 convolution adapts it where
                // the channel counts differ. The chain's first skip (conv_in's output) has no ring state.
                RingSkipProjections = AddModule("ring_skip_proj", new ModuleList<Conv2d>(backend));
                foreach (var (b, skip) in skipChannels.Where(kv => kv.Key != blockChannels.Count - 1))
                {
                    if (skip != blockChannels[b])
                    {
                        _ringSkipProjection[b] = RingSkipProjections.Count;
                        RingSkipProjections.Add(new Conv2d(backend, rng, skip, blockChannels[b], 1));
                    }
                }
            }

            Bridge = AddModule("bridge", bridge);
        }
    }

    /// <summary>The configuration.</summary>
    public ModelConfig Config { get; }

    /// <summary>The topology.</summary>
    public Topology Topology { get; }

    /// <summary>
    /// Parallel with the loop bridge: the temporal layers sit where serial has them and feed back into the
    /// spatial chain, which runs inference-only; no ring projections or fuse (the parameters are serial's).
    /// </summary>
    public bool IsLoop => Topology == Topology.Parallel && Config.Bridge == "loop";

    /// <summary>
    /// Every spatial layer (ResBlock, spatial transformer) that gradients cross keeps just its inputs for
    /// backward and runs again there (activation checkpointing, <see cref="Ops.Recompute"/>). The gradients
    /// are the same, bit for bit; the activations serial keeps to pass gradients through the frozen spatial
    /// layers live only while each layer's backward runs, for one more spatial forward per step. The
    /// parallel topology keeps no spatial activation to begin with, so there it changes nothing.
    /// </summary>
    public bool RecomputeSpatial
    {
        get => Blocks.Any(b => b.RecomputeSpatial);
        set
        {
            foreach (var b in Blocks)
            {
                b.RecomputeSpatial = value;
            }
        }
    }

    /// <summary>
    /// The same for the temporal layers (temporal convolutions and transformers), in every topology: each keeps
    /// its input only and runs again in backward, for one more temporal forward per step. The same gradients.
    /// </summary>
    public bool RecomputeTemporal
    {
        get => Blocks.Any(b => b.RecomputeTemporal);
        set
        {
            foreach (var b in Blocks)
            {
                b.RecomputeTemporal = value;
            }
        }
    }

    /// <summary>
    /// With a ring bridge the parallel topology runs its spatial chain on the backend's second stream
    /// (<see cref="Engine.SideStream"/>), where the backend has one (CUDA), while the temporal ring runs on the main
    /// stream: the chain does not depend on the ring, so spatial block i + 1 can run on the device while the ring computes
    /// block i. The same ops on the same data, so the same values, bit for bit; on by default. The loop bridge's chain
    /// waits for its temporal layers, and backends with one stream run everything in issue order.
    /// </summary>
    public bool SpatialStream { get; set; } = true;

    /// <summary>The streams a forward runs on: 2 when <see cref="SpatialStream"/> takes effect, else 1.</summary>
    public int StreamsUsed => Topology == Topology.Parallel && !IsLoop && SpatialStream ? Backend.StreamCount : 1;

    /// <summary>
    /// Experimental: starts measuring the mean-field Jacobians (<see cref="LoopJacobian"/>) of the loop's bypassed
    /// spatial layers of the kinds in <paramref name="layers"/>, by a random probe on a private tape at every forward
    /// with gradients until <see cref="EndLoopJacobians"/>; from then on the loop passes its gradient through them
    /// instead of through the layers' skip paths (values unchanged; nothing of the spatial layers kept).
    /// <paramref name="imageMean"/> also fits the part that mixes an image's pixels. Drops earlier measurements.
    /// </summary>
    internal void BeginLoopJacobians(LoopBypass layers, int seed, bool imageMean = true)
    {
        DropLoopJacobians();
        int k = 0;
        foreach (var b in Blocks)
        {
            if (layers.HasFlag(LoopBypass.ResBlocks))
            {
                b.ResJacobian = new LoopJacobian(b.Res.Conv1.Weight.Shape[1], b.OutChannels, seed + k++, imageMean) { Calibrating = true };
            }

            if (layers.HasFlag(LoopBypass.Transformers) && b.Attn is not null)
            {
                b.AttnJacobian = new LoopJacobian(b.OutChannels, b.OutChannels, seed + k++, imageMean) { Calibrating = true };
            }
        }
    }

    /// <summary>Ends what <see cref="BeginLoopJacobians"/> started.</summary>
    internal void EndLoopJacobians()
    {
        foreach (var j in Blocks.SelectMany(b => new[] { b.ResJacobian, b.AttnJacobian }))
        {
            j?.Finish(Backend);
        }
    }

    /// <summary>Drops the measured Jacobians: the loop's plain skip paths again.</summary>
    internal void DropLoopJacobians()
    {
        foreach (var b in Blocks)
        {
            b.DropJacobians();
        }
    }

    /// <summary>Diagnostics only: which spatial layers the loop bypasses (default all; see <see cref="LoopBypass"/>).</summary>
    internal LoopBypass LoopBypass { get; set; } = LoopBypass.All;

    /// <summary>
    /// Diagnostics only: a bit mask of resolution levels (bit l: level l, the middle blocks at the lowest
    /// level) whose spatial layers the loop keeps on the tape, exact and with their activations; the other
    /// levels bypass as <see cref="LoopBypass"/> says. Benchmarks' `alignment` and `settings --exact-levels`
    /// measure what partial exactness buys (benchmarks/results/2026-11-26-loop-gradient-alignment.md).
    /// </summary>
    internal int LoopExactLevels { get; set; }

    /// <summary>Latent-to-feature convolution.</summary>
    public Conv2d ConvIn { get; }

    /// <summary>Timestep embedding MLP.</summary>
    public TimestepEmbedding Time { get; }

    /// <summary>Blocks on the way down.</summary>
    public ModuleList<UNetBlock> Down { get; }

    /// <summary>Stride-2 convolutions between levels.</summary>
    public ModuleList<Downsample> Downsamplers { get; }

    /// <summary>The two middle blocks.</summary>
    public ModuleList<UNetBlock> Mid { get; }

    /// <summary>Blocks on the way up.</summary>
    public ModuleList<UNetBlock> Up { get; }

    /// <summary>Upsampling layers between levels.</summary>
    public ModuleList<Upsample> Upsamplers { get; }

    /// <summary>Output norm.</summary>
    public GroupNorm NormOut { get; }

    /// <summary>Feature-to-latent convolution.</summary>
    public Conv2d ConvOut { get; }

    /// <summary>Channel adapters of the temporal ring (parallel with a ring bridge only).</summary>
    public ModuleList<Conv2d>? RingProjections { get; }

    /// <summary>1x1 convolutions on the ring's skip connections where channel counts change (with <see cref="Bridge.RingSkips"/>), or null.</summary>
    public ModuleList<Conv2d>? RingSkipProjections { get; }

    /// <summary>The spatial-to-temporal and temporal-to-output bridges (parallel with a ring bridge only; null for the loop).</summary>
    public Bridge? Bridge { get; }

    /// <summary>All blocks in forward order.</summary>
    public IEnumerable<UNetBlock> Blocks => Down.Concat(Mid).Concat(Up);

    /// <summary>Parameters of the temporal layers, ring and bridges: what stage 2 trains.</summary>
    public IEnumerable<(string Name, Parameter Parameter)> TemporalParameters() =>
        NamedParameters().Where(np => IsTemporal(np.Name));

    /// <summary>Parameters of the text-to-image UNet: what stage 1 trains and stage 2 freezes.</summary>
    public IEnumerable<(string Name, Parameter Parameter)> SpatialParameters() =>
        NamedParameters().Where(np => !IsTemporal(np.Name));

    /// <summary>Whether a parameter name belongs to the temporal side.</summary>
    public static bool IsTemporal(string name) =>
        name.Contains(".temp_conv.", StringComparison.Ordinal) || name.Contains(".temp_attn.", StringComparison.Ordinal)
        || name.StartsWith("ring_proj.", StringComparison.Ordinal) || name.StartsWith("ring_skip_proj.", StringComparison.Ordinal)
        || name.StartsWith("bridge.", StringComparison.Ordinal);

    /// <summary>
    /// The tape's layer kinds (<see cref="Tape.Kind"/>) of the frozen text-to-image layers: what serial keeps for backward
    /// beyond the temporal layers, and the parallel topology never keeps.
    /// </summary>
    public static IReadOnlyList<string> FrozenSpatialKinds { get; } =
        [nameof(ResBlock2D), nameof(SpatialTransformer), "Resample", "Embedding", nameof(TextEncoder)];

    /// <summary>Saved bytes by layer kind split into the frozen spatial layers' (<see cref="FrozenSpatialKinds"/>) and the rest.</summary>
    public static (long Frozen, long Others) SplitSaved(IReadOnlyDictionary<string, long> byKind)
    {
        ArgumentNullException.ThrowIfNull(byKind);
        long frozen = FrozenSpatialKinds.Sum(k => byKind.GetValueOrDefault(k));
        return (frozen, byKind.Values.Sum() - frozen);
    }

    /// <summary>Freezes the text-to-image part (stage 2).</summary>
    public void FreezeSpatial()
    {
        foreach (var (_, p) in SpatialParameters())
        {
            p.Frozen = true;
        }
    }

    /// <summary>
    /// Also freezes the temporal parameters whose names start with one of <paramref name="prefixes"/> ("down.2.",
    /// "mid."): those layers stay at their initial values (a never-trained temporal layer is the identity, its
    /// output layers being zero-initialised). Throws <see cref="ArgumentException"/> naming the blocks that hold
    /// temporal layers when a prefix matches none, or when nothing would be left to train.
    /// </summary>
    public void FreezeTemporal(IReadOnlyList<string> prefixes)
    {
        var temporal = TemporalParameters().ToList();
        foreach (var prefix in prefixes)
        {
            if (string.IsNullOrWhiteSpace(prefix) || !temporal.Any(t => t.Name.StartsWith(prefix, StringComparison.Ordinal)))
            {
                var blocks = temporal.Select(t => string.Join('.', t.Name.Split('.').Take(2)) + ".").Distinct();
                throw new ArgumentException($"'{prefix}' names no temporal layer; the temporal layers sit under {string.Join(", ", blocks)}");
            }
        }

        if (temporal.All(t => t.Parameter.Frozen || prefixes.Any(p => t.Name.StartsWith(p, StringComparison.Ordinal))))
        {
            throw new ArgumentException($"freezing {string.Join(", ", prefixes)} leaves no temporal layer to train");
        }

        foreach (var (name, p) in temporal)
        {
            if (prefixes.Any(prefix => name.StartsWith(prefix, StringComparison.Ordinal)))
            {
                p.Frozen = true;
            }
        }
    }

    /// <summary>
    /// Predicts the noise of latents <paramref name="x"/> [B*F, C, H, W] at <paramref name="timesteps"/>
    /// (one per image) given a text context [B*F, L, D]; <paramref name="frames"/> consecutive images form a clip.
    /// </summary>
    public Tensor Forward(Tensor x, ReadOnlySpan<int> timesteps, Tensor context, int frames)
    {
        if (x.Dim(0) % frames != 0 || timesteps.Length != x.Dim(0) || context.Dim(0) != x.Dim(0))
        {
            throw new ShapeMismatchException("unet3d", $"latents {x.Shape}, {timesteps.Length} timesteps and context {context.Shape} do not describe clips of {frames} frames.");
        }

        // In the parallel topology even the time embedding belongs to the inference-only spatial chain.
        Tensor e;
        using (Topology == Topology.Parallel ? Tape.NoGrad() : default)
        {
            e = Time.Forward(timesteps);
        }

        using var embedding = e;
        return Topology == Topology.Parallel && !IsLoop ? ForwardParallel(x, e, context, frames) : ForwardSerial(x, e, context, frames);
    }

    private Tensor ForwardSerial(Tensor x, Tensor e, Tensor c, int frames)
    {
        var skips = new Stack<Tensor>();
        var h = ConvIn.Forward(x);
        skips.Push(Alias(h));
        try
        {
            foreach (var step in _plan)
            {
                h = step.Kind switch
                {
                    StepKind.Block => h.Then(t => RunBlock(step, t, skips, u => Topology switch
                    {
                        Topology.Spatial => step.Block.Spatial(u, e, c),
                        Topology.Serial => step.Block.Serial(u, e, c, frames),
                        _ => step.Block.Loop(u, e, c, frames, ((LoopExactLevels >> step.Level) & 1) != 0 ? LoopBypass.None : LoopBypass),
                    })),
                    StepKind.Down => h.Then(Downsamplers[step.Index].Forward),
                    _ => h.Then(Upsamplers[step.Index].Forward),
                };
                if (step.PushSkip)
                {
                    skips.Push(Alias(h));
                }
            }

            // In the loop the resampling convs (frozen, linear: they keep nothing) and the out head are on
            // the gradient's path; the out head keeps its input, one feature map.
            return h.Then(OutHead);
        }
        finally
        {
            DisposeAll(skips);
        }
    }

    private Tensor ForwardParallel(Tensor x, Tensor e, Tensor c, int frames)
    {
        // The chain's inputs are the main stream's; the chain's outputs that the ring reads are handed over, block by
        // block, and the main stream joins the side stream's work before the sum at the end.
        using var side = SideStream.Fork(x.Backend, SpatialStream);
        side.Share(x);
        side.Share(e);
        side.Share(c);
        var skips = new Stack<Tensor>();
        Tensor s;
        Tensor? ring = null;
        using (side.Use())
        using (Tape.NoGrad())
        {
            s = ConvIn.Forward(x);
        }

        skips.Push(Alias(s));

        // With ring skips the ring keeps its own skip stack beside the chain's; conv_in's has no ring state.
        var ringSkips = new Stack<Tensor?>();
        bool ringSkipsOn = Bridge!.RingSkips;
        ringSkips.Push(null);
        try
        {
            foreach (var step in _plan)
            {
                // Spatial chain: the frozen text-to-image UNet, inference only, nothing on the tape.
                using (side.Use())
                using (Tape.NoGrad())
                {
                    s = step.Kind switch
                    {
                        StepKind.Block => s.Then(t => RunBlock(step, t, skips, u => step.Block.Spatial(u, e, c))),
                        StepKind.Down => s.Then(Downsamplers[step.Index].Forward),
                        _ => s.Then(Upsamplers[step.Index].Forward),
                    };
                    if (step.PushSkip)
                    {
                        skips.Push(Alias(s));
                    }
                }

                // Temporal ring: the only place gradients flow.
                if (step.Kind == StepKind.Block)
                {
                    side.Handoff(s);
                }

                using (Tape.Kind("TemporalRing"))
                {
                    using var ringSkip = ringSkipsOn && step.PopSkip ? ringSkips.Pop() : null;
                    ring = step.Kind switch
                    {
                        StepKind.Block => RingBlock(step, ring, ringSkip, s, frames),
                        StepKind.Down => ring?.Then(Ops.AvgPool2x2),
                        _ => ring?.Then(Ops.Upsample2x),
                    };
                    if (ringSkipsOn && step.PushSkip)
                    {
                        ringSkips.Push(ring is null ? null : Alias(ring));
                    }
                }
            }

            side.Handoff(s);
            using var temporalOut = Bridge!.Exit(ring!, s);
            Tensor spatialOut;
            using (side.Use())
            using (Tape.NoGrad())
            {
                spatialOut = s.Then(OutHead);
            }

            side.Handoff(spatialOut);
            using (spatialOut)
            using (Tape.Kind(nameof(Layers.Bridge)))
            {
                return Ops.Add(spatialOut, temporalOut);
            }
        }
        finally
        {
            ring?.Dispose();
            DisposeAll(skips);
            while (ringSkips.Count > 0)
            {
                ringSkips.Pop()?.Dispose();
            }
        }
    }

    /// <summary>
    /// Bridge 1 into the block's temporal layers: u = Enter(adapt(t) [+ adapt(skip)], s'), then t' = TA(TC(u)).
    /// </summary>
    private Tensor RingBlock(Step step, Tensor? ring, Tensor? ringSkip, Tensor spatial, int frames)
    {
        if (ring is not null && _ringProjection.TryGetValue(step.Ordinal, out int p))
        {
            ring = ring.Then(RingProjections![p].Forward);
        }

        if (ring is not null && ringSkip is not null)
        {
            using var skip = _ringSkipProjection.TryGetValue(step.Ordinal, out int q) ? RingSkipProjections![q].Forward(ringSkip) : Alias(ringSkip);
            ring = ring.Then(t => Ops.Add(t, skip));
        }

        using var u = Bridge!.Enter(step.Ordinal, ring, spatial);
        ring?.Dispose();
        return Bridge.Leave(step.Ordinal, step.Block.Temporal(u, frames), spatial);
    }

    private static Tensor RunBlock(Step step, Tensor h, Stack<Tensor> skips, Func<Tensor, Tensor> block)
    {
        if (!step.PopSkip)
        {
            return block(h);
        }

        using var skip = skips.Pop();
        using var joined = Ops.Concat(1, h, skip);
        return block(joined);
    }

    private Tensor OutHead(Tensor h)
    {
        using var kind = Tape.Kind("OutHead");
        return NormOut.Forward(h, silu: true).Then(ConvOut.Forward);
    }

    /// <summary>A second handle on the same tensor that keeps its place in the graph (a skip connection).</summary>
    private static Tensor Alias(Tensor t) => Ops.Reshape(t, t.Shape.ToArray());

    private static void DisposeAll(Stack<Tensor> tensors)
    {
        while (tensors.Count > 0)
        {
            tensors.Pop().Dispose();
        }
    }

    private enum StepKind
    {
        Block,
        Down,
        Up,
    }

    private sealed record Step(StepKind Kind, ModuleList<UNetBlock>? List, int Index, bool PopSkip, bool PushSkip, int Ordinal, int Level)
    {
        public UNetBlock Block => List![Index];
    }
}
