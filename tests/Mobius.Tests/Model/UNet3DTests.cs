using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Model;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>The invariants of the two topologies, on the micro config with random inputs.</summary>
public abstract class UNet3DTests(BackendFixture fixture)
{
    private static readonly string[] SpatialKinds = ["ResBlock2D", "SpatialTransformer", "Resample", "OutHead", "Embedding", "TextEncoder"];

    private IBackend B => fixture.Backend;

    private static ModelConfig Micro => ModelConfig.Get("micro");

    private sealed record Inputs(Tensor X, int[] Timesteps, Tensor Context, Tensor Target) : IDisposable
    {
        public void Dispose()
        {
            X.Dispose();
            Context.Dispose();
            Target.Dispose();
        }
    }

    private Inputs MakeInputs(Rng r)
    {
        var c = Micro;
        int images = c.Batch * c.Frames;
        var xShape = new Shape(images, c.LatentChannels, c.LatentHeight, c.LatentWidth);
        var steps = Enumerable.Range(0, c.Batch).SelectMany(_ => Enumerable.Repeat(r.Int(0, 999), c.Frames)).ToArray();
        return new Inputs(
            Tensor.FromArray(B, r.Uniform(xShape.Numel), xShape),
            steps,
            Tensor.FromArray(B, r.Uniform((long)images * c.TokenLength * c.TextWidth), new Shape(images, c.TokenLength, c.TextWidth)),
            Tensor.FromArray(B, r.Uniform(xShape.Numel), xShape));
    }

    /// <summary>A video model whose spatial part is the given text-to-image model's, frozen.</summary>
    private UNet3D VideoModel(UNet3D t2i, Topology topology, int seed)
    {
        var m = new UNet3D(B, Micro, topology, seed);
        var loaded = m.LoadStateDict(t2i.StateDict(), strict: false);
        Assert.Equal(t2i.Parameters().Count(), loaded.Count);
        m.FreezeSpatial();
        return m;
    }

    [Fact]
    public void Both_topologies_start_as_the_frozen_text_to_image_model_exactly()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, r.Seed);
        using var serial = VideoModel(t2i, Topology.Serial, r.Seed + 1);
        using var parallel = VideoModel(t2i, Topology.Parallel, r.Seed + 2);
        using var inputs = MakeInputs(r);
        int f = Micro.Frames;

        float[] Predict(UNet3D m)
        {
            using var y = m.Forward(inputs.X, inputs.Timesteps, inputs.Context, f);
            tape.Clear();
            return y.ToArray();
        }

        var reference = Predict(t2i);
        Assert.Contains(reference, v => v != 0);
        Assert.Equal(reference, Predict(serial));
        Assert.Equal(reference, Predict(parallel));
    }

    [Theory]
    [InlineData(Topology.Serial)]
    [InlineData(Topology.Parallel)]
    public void Spatial_weights_never_receive_a_gradient_and_temporal_weights_do(Topology topology)
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, r.Seed);
        using var m = VideoModel(t2i, topology, r.Seed + 1);
        using var inputs = MakeInputs(r);
        using (var y = m.Forward(inputs.X, inputs.Timesteps, inputs.Context, Micro.Frames))
        using (var loss = Ops.MseLoss(y, inputs.Target))
        {
            loss.Backward();
        }

        Assert.All(m.SpatialParameters(), np => Assert.Null(np.Parameter.Grad));
        var temporal = m.TemporalParameters().ToList();
        Assert.NotEmpty(temporal);
        Assert.All(temporal, np => Assert.True(np.Parameter.Grad is not null, $"{np.Name} has no gradient"));

        // The zero-initialised output layers see a non-zero gradient at the first step.
        var outputs = temporal.Where(np => np.Name.EndsWith("proj_out.weight", StringComparison.Ordinal) || np.Name.EndsWith("conv4_weight", StringComparison.Ordinal) || np.Name.EndsWith("fuse_conv.weight", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(outputs);
        Assert.Contains(outputs, np => np.Parameter.Grad!.ToArray().Any(v => v != 0));
        foreach (var (_, p) in temporal)
        {
            p.ClearGrad();
        }

        Assert.Equal(0, tape.NodeCount);
        Assert.Equal(0, B.Memory.Current(MemoryCategory.SavedActivations));
    }

    [Fact]
    public void The_parallel_tape_holds_no_spatial_node_and_the_serial_tape_does()
    {
        var r = new Rng(Seeds.One);
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, r.Seed);
        using var inputs = MakeInputs(r);
        var stats = new Dictionary<Topology, IReadOnlyDictionary<string, TapeKindStats>>();
        foreach (var topology in new[] { Topology.Serial, Topology.Parallel })
        {
            using var tape = Tape.Begin();
            using var m = VideoModel(t2i, topology, r.Seed + 1);
            using var y = m.Forward(inputs.X, inputs.Timesteps, inputs.Context, Micro.Frames);
            stats[topology] = tape.StatsByKind;
        }

        var parallel = stats[Topology.Parallel];
        Assert.Empty(parallel.Keys.Intersect(SpatialKinds));
        Assert.Subset(new HashSet<string> { "TemporalConv", "TemporalTransformer", "TemporalRing", "Bridge" }, parallel.Keys.ToHashSet());

        // Serial: the frozen spatial layers are on the gradient path and keep activations for it.
        var serial = stats[Topology.Serial];
        Assert.True(serial["ResBlock2D"].Nodes > 0 && serial["ResBlock2D"].SavedBytes > 0);
        Assert.True(serial["SpatialTransformer"].Nodes > 0 && serial["SpatialTransformer"].SavedBytes > 0);
        long serialSaved = serial.Values.Sum(s => s.SavedBytes);
        long parallelSaved = parallel.Values.Sum(s => s.SavedBytes);
        Assert.True(parallelSaved < serialSaved, $"parallel saved {parallelSaved} B, serial {serialSaved} B");
    }

    [Fact]
    public void Spatial_parameter_names_are_the_same_in_every_topology()
    {
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, 1);
        using var serial = new UNet3D(B, Micro, Topology.Serial, 1);
        using var parallel = new UNet3D(B, Micro, Topology.Parallel, 1);
        var names = t2i.NamedParameters().Select(n => n.Name).ToList();
        Assert.Equal(names, serial.SpatialParameters().Select(n => n.Name));
        Assert.Equal(names, parallel.SpatialParameters().Select(n => n.Name));
        Assert.Empty(t2i.TemporalParameters());
        Assert.Contains(parallel.TemporalParameters(), n => n.Name.StartsWith("bridge.", StringComparison.Ordinal));
    }
}

public sealed class CpuUNet3DTests(CpuFixture f) : UNet3DTests(f), IClassFixture<CpuFixture>;
public sealed class CudaUNet3DTests(CudaFixture f) : UNet3DTests(f), IClassFixture<CudaFixture>;
