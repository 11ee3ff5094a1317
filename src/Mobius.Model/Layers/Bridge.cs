using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;

namespace Mobius.Model.Layers;

/// <summary>
/// The two bridges of the parallel topology (our reading of the paper's "double bridge"): at every
/// block the spatial chain's output enters the temporal ring (<see cref="Enter"/>, spatial input
/// detached, so no gradient reaches the spatial layers), and at the end the ring joins the output
/// through a small fuse network whose last convolution is zero-initialised (<see cref="Exit"/>), so at
/// initialisation the model predicts exactly what the frozen text-to-image UNet predicts. Subclasses
/// are other readings; <see cref="Create"/> picks one by name.
/// </summary>
public abstract class Bridge : Module
{
    /// <summary>Creates the fuse (GN, SiLU, conv3x3 to the latent channels, zero-initialised).</summary>
    protected Bridge(IBackend backend, Random rng, int ringChannels, int outChannels, int groups)
        : base(backend)
    {
        FuseNorm = AddModule("fuse_norm", new GroupNorm(backend, groups, ringChannels));
        FuseConv = AddModule("fuse_conv", new Conv2d(backend, rng, ringChannels, outChannels, 3, zeroInit: true));
    }

    /// <summary>Norm of the fuse.</summary>
    public GroupNorm FuseNorm { get; }

    /// <summary>Zero-initialised output convolution of the fuse.</summary>
    public Conv2d FuseConv { get; }

    /// <summary>
    /// Bridge 1: the input of block <paramref name="block"/>'s temporal layers from the ring state
    /// (null before the first block) and the block's spatial output (no gradient): t + s' unless a reading
    /// says otherwise.
    /// </summary>
    public virtual Tensor Enter(int block, Tensor? ring, Tensor spatial)
    {
        using var kind = Tape.Kind(nameof(Bridge));
        return Sum(ring, spatial);
    }

    /// <summary>
    /// Whether the ring has skip connections of its own, where the UNet has them: each decoder block's ring
    /// input also gets the ring state of the encoder block whose spatial output the chain concatenates
    /// there (through a trainable 1x1 convolution where the channel counts differ).
    /// </summary>
    public virtual bool RingSkips => false;

    /// <summary>
    /// The ring state block <paramref name="block"/> passes on, from its temporal layers' output (owned: this
    /// returns it or disposes it) and its spatial output. The ring carries what the temporal layers output.
    /// </summary>
    public virtual Tensor Leave(int block, Tensor output, Tensor spatial) => output;

    /// <summary>
    /// Bridge 2: the ring's contribution to the predicted noise, from the last block's ring state and the
    /// spatial chain's last features (before the out head).
    /// </summary>
    public virtual Tensor Exit(Tensor ring, Tensor spatial)
    {
        using var kind = Tape.Kind(nameof(Bridge));
        return Fuse(ring);
    }

    /// <summary>The fuse: conv3x3(SiLU(GN(x))), zero-initialised.</summary>
    protected Tensor Fuse(Tensor x) => FuseNorm.Forward(x, silu: true).Then(FuseConv.Forward);

    /// <summary>The bridge named by a config ("additive", "skip", "delta", "gated" or "mixing").</summary>
    public static Bridge Create(string name, IBackend backend, Random rng, int[] blockChannels, int outChannels, int groups) => name switch
    {
        "additive" => new AdditiveBridge(backend, rng, blockChannels[^1], outChannels, groups, ringSkips: false),
        "skip" => new AdditiveBridge(backend, rng, blockChannels[^1], outChannels, groups, ringSkips: true),
        "delta" => new DeltaBridge(backend, rng, blockChannels[^1], outChannels, groups),
        "gated" => new GatedBridge(backend, rng, blockChannels, outChannels, groups),
        "mixing" => new MixingBridge(backend, rng, blockChannels, outChannels, groups),
        _ => throw new ArgumentException($"unknown bridge '{name}'; known: {string.Join(", ", ModelConfig.Bridges.Where(b => b != "loop"))}."),
    };

    /// <summary>t + s', or s' alone (a new handle) before the first block.</summary>
    protected static Tensor Sum(Tensor? ring, Tensor spatial) =>
        ring is null ? Ops.Reshape(spatial, spatial.Shape.ToArray()) : Ops.Add(ring, spatial);
}

/// <summary>
/// The additive ring: t + s' from block to block ("additive"). With <paramref name="ringSkips"/> ("skip") the ring
/// is wired like the UNet and keeps skip connections where the spatial chain does (<see cref="Bridge.RingSkips"/>):
/// in the plain ring the encoder's temporal outputs reach the decoder only through the lowest resolution
/// (average-pooled down, nearest-upsampled back); with the skips the full-resolution encoder layers reach the fuse
/// at full resolution, as their spatial twins reach the out head through the UNet's skips.
/// </summary>
public sealed class AdditiveBridge(IBackend backend, Random rng, int ringChannels, int outChannels, int groups, bool ringSkips)
    : Bridge(backend, rng, ringChannels, outChannels, groups)
{
    /// <inheritdoc />
    public override bool RingSkips => ringSkips;
}

/// <summary>
/// The ring carries only what the temporal layers add, d: each block's temporal layers see s' + d (the
/// spatial output plus the temporal corrections so far, what serial's temporal layers see, and at
/// initialisation exactly that: s'), and pass on TA(TC(s' + d)) - s'. Skip connections as the
/// "skip" reading of <see cref="AdditiveBridge"/>; the fuse reads s_L + d_L. The additive ring instead carries the running sum of
/// every block's spatial output, so its temporal layers see features no serial layer sees.
/// </summary>
public sealed class DeltaBridge : Bridge
{
    /// <summary>Creates the bridge.</summary>
    public DeltaBridge(IBackend backend, Random rng, int ringChannels, int outChannels, int groups)
        : base(backend, rng, ringChannels, outChannels, groups)
    {
    }

    /// <inheritdoc />
    public override bool RingSkips => true;

    /// <inheritdoc />
    public override Tensor Leave(int block, Tensor output, Tensor spatial)
    {
        using var kind = Tape.Kind(nameof(Bridge));
        return output.Then(o => Ops.Sub(o, spatial));
    }

    /// <inheritdoc />
    public override Tensor Exit(Tensor ring, Tensor spatial)
    {
        using var kind = Tape.Kind(nameof(Bridge));
        using var u = Ops.Add(ring, spatial);
        return Fuse(u);
    }
}

/// <summary>A gated reading: s' + g_b * t with a learned per-channel gate per block (initialised to 1).</summary>
public sealed class GatedBridge : Bridge
{
    private readonly Parameter[] _gates;

    /// <summary>Creates the bridge with one gate vector per block.</summary>
    public GatedBridge(IBackend backend, Random rng, int[] blockChannels, int outChannels, int groups)
        : base(backend, rng, blockChannels[^1], outChannels, groups)
    {
        _gates = blockChannels.Select((c, i) => AddParameter($"gate{i}", new Shape(c), () => Init.Constant(c, 1f))).ToArray();
    }

    /// <inheritdoc />
    public override Tensor Enter(int block, Tensor? ring, Tensor spatial)
    {
        using var kind = Tape.Kind(nameof(Bridge));
        if (ring is null)
        {
            return Ops.Reshape(spatial, spatial.Shape.ToArray());
        }

        using var gate = Broadcast(_gates[block], ring);
        using var gated = Ops.Mul(ring, gate);
        return Ops.Add(gated, spatial);
    }

    private static Tensor Broadcast(Tensor gate, Tensor like)
    {
        using var zeros = Tensor.Zeros(like.Backend, like.Shape);
        return Ops.AddBias(zeros, gate, 1);
    }
}

/// <summary>
/// The additive ring with a spatial mixer at every block: u = t + s', then u + conv3x3(SiLU(GN(u))), a
/// trainable 3x3 convolution (PyTorch's default initialisation; the fuse alone keeps the model at the
/// text-to-image prediction at initialisation). The temporal layers mix along frames only, pixel by pixel,
/// so the plain ring can move content across the frame only in its resampling and its fuse; a clip whose
/// sprite travels needs what is at one pixel in one frame to come from a neighbouring pixel in the last.
/// </summary>
public sealed class MixingBridge : Bridge
{
    private readonly (GroupNorm Norm, Conv2d Conv)[] _mixers;

    /// <summary>Creates the bridge with one mixer per block.</summary>
    public MixingBridge(IBackend backend, Random rng, int[] blockChannels, int outChannels, int groups)
        : base(backend, rng, blockChannels[^1], outChannels, groups)
    {
        _mixers = blockChannels.Select((c, i) =>
            (AddModule($"mix{i}_norm", new GroupNorm(backend, groups, c)), AddModule($"mix{i}_conv", new Conv2d(backend, rng, c, c, 3)))).ToArray();
    }

    /// <inheritdoc />
    public override Tensor Enter(int block, Tensor? ring, Tensor spatial)
    {
        using var kind = Tape.Kind(nameof(Bridge));
        using var u = Sum(ring, spatial);
        var (norm, conv) = _mixers[block];
        using var mixed = norm.Forward(u, silu: true).Then(conv.Forward);
        return Ops.Add(u, mixed);
    }
}
