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

    private Inputs MakeInputs(Rng r, ModelConfig? config = null)
    {
        var c = config ?? Micro;
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
    private UNet3D VideoModel(UNet3D t2i, Topology topology, int seed, string bridge = ModelConfig.DefaultBridge)
    {
        var m = new UNet3D(B, Micro with { Bridge = bridge }, topology, seed);
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
        foreach (var bridge in ModelConfig.Bridges.Where(b => b != ModelConfig.DefaultBridge))
        {
            using var other = VideoModel(t2i, Topology.Parallel, r.Seed + 3, bridge);
            Assert.Equal(reference, Predict(other));
        }
    }

    /// <summary>
    /// The parallel topology's spatial chain on the backend's second stream (CUDA) computes the same outputs and
    /// gradients, bit for bit, as on one stream, with every bridge of the ring, in a training forward and in a
    /// no-grad one, and leaves no memory behind. On the simulated driver every op's reads and writes are also checked
    /// against the streams' order (kernels/README.md): a buffer one stream wrote and another read without an event
    /// between them would fail the run.
    /// </summary>
    [Theory]
    [InlineData("additive")]
    [InlineData("skip")]
    [InlineData("delta")]
    [InlineData("gated")]
    [InlineData("mixing")]
    public void The_spatial_chain_on_a_second_stream_gives_the_same_bits(string bridge)
    {
        if (B.Name == "cuda" && Environment.GetEnvironmentVariable("MOBIUS_STREAMS") is null or "")
        {
            Assert.Equal(2, B.StreamCount);
        }

        var r = new Rng(Seeds.One * 43 + bridge.Length);
        using var tape = Tape.Begin();
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, r.Seed);
        var config = Micro with { Bridge = bridge, Batch = 1, Frames = 3 }; // a clip of three frames: a third of micro's work
        using var m = new UNet3D(B, config, Topology.Parallel, r.Seed + 1);
        m.LoadStateDict(t2i.StateDict(), strict: false);
        m.FreezeSpatial();
        m.LoadStateDict(RandomTemporal(m, r), strict: false);
        using var inputs = MakeInputs(r, config);

        (float[] Y, float[] NoGrad, Dictionary<string, float[]> Grads) Run(bool sideStream, bool sameMemory)
        {
            m.SpatialStream = sideStream;
            long before = B.Memory.CurrentBytes;
            float[] y;
            using (var o = m.Forward(inputs.X, inputs.Timesteps, inputs.Context, config.Frames))
            {
                y = o.ToArray();
                using var loss = Ops.MseLoss(o, inputs.Target);
                loss.Backward();
            }

            tape.Clear();
            var trainable = m.NamedParameters().Where(np => !np.Parameter.Frozen).ToList();
            var grads = trainable.ToDictionary(np => np.Name, np => np.Parameter.Grad?.ToArray() ?? []);
            foreach (var (_, p) in trainable)
            {
                p.ClearGrad();
            }

            float[] noGrad;
            using (Tape.NoGrad())
            using (var o = m.Forward(inputs.X, inputs.Timesteps, inputs.Context, config.Frames))
            {
                noGrad = o.ToArray();
            }

            if (sameMemory)
            {
                Assert.Equal(before, B.Memory.CurrentBytes); // the gradient buffers and caches exist from the first run on
            }

            return (y, noGrad, grads);
        }

        var one = Run(false, sameMemory: false);
        var two = Run(true, sameMemory: true);
        Assert.Contains(one.Y, v => Math.Abs(v) > 1e-3);
        Assert.Equal(one.Y, two.Y);
        Assert.Equal(one.Y, one.NoGrad);
        Assert.Equal(one.NoGrad, two.NoGrad);
        Assert.Equal(one.Grads.Keys, two.Grads.Keys);
        Assert.Contains(one.Grads.Values, g => g.Any(v => v != 0));
        foreach (var (name, g) in one.Grads)
        {
            Assert.True(g.AsSpan().SequenceEqual(two.Grads[name]), name);
        }
    }

    /// <summary>Random values for every temporal parameter (the zero-initialised outputs included).</summary>
    private static Dictionary<string, float[]> RandomTemporal(UNet3D m, Rng r) =>
        m.TemporalParameters().ToDictionary(np => np.Name, np => r.Uniform(np.Parameter.Numel, 0.2f));

    [Fact]
    public void The_loop_computes_serial_values_and_the_exact_gradient_where_only_the_out_head_follows()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, r.Seed);
        using var serial = VideoModel(t2i, Topology.Serial, r.Seed + 1);
        using var loop = VideoModel(t2i, Topology.Parallel, r.Seed + 2, "loop");
        Assert.True(loop.IsLoop);
        var temporal = RandomTemporal(serial, r);
        serial.LoadStateDict(temporal, strict: false);
        Assert.Equal(temporal.Count, loop.LoadStateDict(temporal, strict: false).Count); // the same parameters
        using var inputs = MakeInputs(r);

        Dictionary<string, float[]> Run(UNet3D m, out float[] output)
        {
            using var y = m.Forward(inputs.X, inputs.Timesteps, inputs.Context, Micro.Frames);
            output = y.ToArray();
            using (var loss = Ops.MseLoss(y, inputs.Target))
            {
                loss.Backward();
            }

            var grads = m.TemporalParameters().ToDictionary(np => np.Name, np => np.Parameter.Grad!.ToArray());
            foreach (var (_, p) in m.TemporalParameters())
            {
                p.ClearGrad();
            }

            return grads;
        }

        var gs = Run(serial, out var ys);
        var gl = Run(loop, out var yl);
        Assert.Contains(ys, v => Math.Abs(v) > 1e-3);
        Assert.Equal(ys, yl); // the same arithmetic: bit for bit

        // After the last block's temporal transformer only the out head runs, on the tape in both: its
        // gradients are the exact ones. Earlier layers see the skip-path gradient, which differs.
        string last = $"up.{loop.Up.Count - 1}.temp_attn.";
        var tail = gs.Keys.Where(n => n.StartsWith(last, StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(tail);
        foreach (var n in tail)
        {
            Assert.Equal(gs[n], gl[n], (a, b) => Math.Abs(a - b) <= 1e-5f + 1e-4f * Math.Abs(a));
        }

        var first = gs.Keys.First(n => n.StartsWith("down.0.temp_conv.conv1_weight", StringComparison.Ordinal));
        Assert.NotEqual(gs[first], gl[first]);
        double cos = Cosine(gs[first], gl[first]);
        Assert.True(cos is > -1 and < 0.9999, $"cosine {cos}");

        // With no spatial layer bypassed (the diagnostic setting) the loop is serial, gradients included.
        loop.LoopBypass = LoopBypass.None;
        var ge = Run(loop, out var ye);
        Assert.Equal(ys, ye);
        foreach (var (n, g) in gs)
        {
            Assert.Equal(g, ge[n], (a, b) => Math.Abs(a - b) <= 1e-6f + 1e-5f * Math.Abs(a));
        }
    }

    private static double Cosine(float[] a, float[] b)
    {
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            ab += (double)a[i] * b[i];
            aa += (double)a[i] * a[i];
            bb += (double)b[i] * b[i];
        }

        return ab / Math.Sqrt(aa * bb);
    }

    [Theory]
    [InlineData(Topology.Serial, "loop")]
    [InlineData(Topology.Parallel, "loop")]
    [InlineData(Topology.Parallel, "additive")]
    [InlineData(Topology.Parallel, "skip")]
    [InlineData(Topology.Parallel, "delta")]
    [InlineData(Topology.Parallel, "mixing")]
    public void Spatial_weights_never_receive_a_gradient_and_temporal_weights_do(Topology topology, string bridge)
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, r.Seed);
        using var m = VideoModel(t2i, topology, r.Seed + 1, bridge);
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

    private static IEnumerable<string> RingBridges => ModelConfig.Bridges.Where(b => b != "loop");

    [Fact]
    public void The_parallel_tape_holds_no_spatial_layer_and_the_serial_tape_does()
    {
        var r = new Rng(Seeds.One);
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, r.Seed);
        using var inputs = MakeInputs(r);
        var stats = new Dictionary<string, IReadOnlyDictionary<string, TapeKindStats>>();
        var runs = new[] { ("serial", Topology.Serial, "loop"), ("loop", Topology.Parallel, "loop") }
            .Concat(RingBridges.Select(b => (b, Topology.Parallel, b)));
        foreach (var (name, topology, bridge) in runs)
        {
            using var tape = Tape.Begin();
            using var m = VideoModel(t2i, topology, r.Seed + 1, bridge);
            using var y = m.Forward(inputs.X, inputs.Timesteps, inputs.Context, Micro.Frames);
            stats[name] = tape.StatsByKind;
        }

        // Every ring bridge: nothing spatial on the tape at all.
        foreach (var bridge in RingBridges)
        {
            var ring = stats[bridge];
            Assert.Empty(ring.Keys.Intersect(SpatialKinds));
            Assert.Subset(new HashSet<string> { "TemporalConv", "TemporalTransformer", "TemporalRing", "Bridge" }, ring.Keys.ToHashSet());
        }

        // The loop: no ResBlock2D or SpatialTransformer node; the gradient's path crosses only the frozen
        // resampling convs and skip joins (which keep nothing) and the out head (which keeps its input).
        var loop = stats["loop"];
        Assert.DoesNotContain("ResBlock2D", loop.Keys);
        Assert.DoesNotContain("SpatialTransformer", loop.Keys);
        Assert.Subset(new HashSet<string> { "TemporalConv", "TemporalTransformer", "Bridge", "Resample", "Other", "OutHead" }, loop.Keys.ToHashSet());
        Assert.True(loop["Bridge"].Nodes > 0);
        Assert.All(new[] { "Bridge", "Resample", "Other" }, k => Assert.Equal(0, loop.GetValueOrDefault(k)?.SavedBytes ?? 0));

        // Serial: the frozen spatial layers are on the gradient path and keep activations for it.
        var serial = stats["serial"];
        Assert.True(serial["ResBlock2D"].Nodes > 0 && serial["ResBlock2D"].SavedBytes > 0);
        Assert.True(serial["SpatialTransformer"].Nodes > 0 && serial["SpatialTransformer"].SavedBytes > 0);
        long serialSaved = serial.Values.Sum(s => s.SavedBytes);
        foreach (var parallel in RingBridges.Select(b => stats[b]).Append(loop))
        {
            long parallelSaved = parallel.Values.Sum(s => s.SavedBytes);
            Assert.True(parallelSaved < serialSaved, $"parallel saved {parallelSaved} B, serial {serialSaved} B");
        }

        // Loop and serial keep the same temporal activations; the loop keeps nothing else but the out head's input.
        Assert.Equal(serial["TemporalConv"].SavedBytes, loop["TemporalConv"].SavedBytes);
        Assert.Equal(serial["TemporalTransformer"].SavedBytes, loop["TemporalTransformer"].SavedBytes);
        Assert.Equal(serial["OutHead"].SavedBytes, loop["OutHead"].SavedBytes);
    }

    [Fact]
    public void Recomputing_layers_keeps_the_gradients_and_only_their_inputs()
    {
        var r = new Rng(Seeds.One);
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, r.Seed);
        using var serial = VideoModel(t2i, Topology.Serial, r.Seed + 1);
        using var loop = VideoModel(t2i, Topology.Parallel, r.Seed + 2, "loop");
        var weights = RandomTemporal(serial, r);
        serial.LoadStateDict(weights, strict: false);
        loop.LoadStateDict(weights, strict: false);
        using var inputs = MakeInputs(r);

        (float[] Y, Dictionary<string, float[]> Grads, IReadOnlyDictionary<string, TapeKindStats> Saved) Run(UNet3D m, bool spatial, bool temporal)
        {
            m.RecomputeSpatial = spatial;
            m.RecomputeTemporal = temporal;
            using var tape = Tape.Begin();
            using var y = m.Forward(inputs.X, inputs.Timesteps, inputs.Context, Micro.Frames);
            var saved = tape.StatsByKind;
            using (var loss = Ops.MseLoss(y, inputs.Target))
            {
                loss.Backward();
            }

            var grads = m.TemporalParameters().ToDictionary(np => np.Name, np => np.Parameter.Grad!.ToArray());
            foreach (var (name, p) in m.NamedParameters())
            {
                Assert.True(p.Grad is null || UNet3D.IsTemporal(name), $"{name} got a gradient");
                p.ClearGrad();
            }

            return (y.ToArray(), grads, saved);
        }

        long Kind(IReadOnlyDictionary<string, TapeKindStats> s, string kind) => s.GetValueOrDefault(kind)?.SavedBytes ?? 0;
        long Sum(IReadOnlyDictionary<string, TapeKindStats> s, params string[] kinds) => kinds.Sum(k => Kind(s, k));
        string[] spatialKinds = ["ResBlock2D", "SpatialTransformer"], temporalKinds = ["TemporalConv", "TemporalTransformer"];

        foreach (var m in new[] { serial, loop })
        {
            var plain = Run(m, false, false);
            long before = B.Memory.CurrentBytes; // after a first step, which may fill caches
            foreach (var (spatial, temporal) in new[] { (true, false), (false, true), (true, true) })
            {
                var again = Run(m, spatial, temporal);
                Assert.Equal(before, B.Memory.CurrentBytes);
                string what = $"{(m.IsLoop ? "loop" : "serial")}, recomputing{(spatial ? " spatial" : "")}{(temporal ? " temporal" : "")}";

                // The same values and the same gradients, bit for bit: the recomputed forward is the same arithmetic.
                Assert.Equal(plain.Y, again.Y);
                foreach (var (name, g) in plain.Grads)
                {
                    Assert.True(g.AsSpan().SequenceEqual(again.Grads[name]), $"{what}: {name}");
                }

                // Recomputed layers keep their inputs (and the embedding or context they read), far less than before;
                // the others keep what they kept. The loop keeps no spatial activation, so there spatial changes nothing.
                foreach (var (kinds, on) in new[] { (spatialKinds, spatial), (temporalKinds, temporal) })
                {
                    if (on && Sum(plain.Saved, kinds) > 0)
                    {
                        Assert.True(Sum(again.Saved, kinds) < Sum(plain.Saved, kinds) / 3, $"{what}: {string.Join("+", kinds)} keep {Sum(again.Saved, kinds)} B, {Sum(plain.Saved, kinds)} B before");
                    }
                    else
                    {
                        Assert.Equal(Sum(plain.Saved, kinds), Sum(again.Saved, kinds));
                    }
                }
            }

            Assert.Contains(plain.Grads.Values.SelectMany(g => g), v => v != 0);
            Assert.Equal(m.IsLoop, Sum(plain.Saved, spatialKinds) == 0);
        }
    }

    [Fact]
    public void Spatial_parameter_names_are_the_same_in_every_topology()
    {
        using var t2i = new UNet3D(B, Micro, Topology.Spatial, 1);
        using var serial = new UNet3D(B, Micro, Topology.Serial, 1);
        using var parallel = new UNet3D(B, Micro with { Bridge = "additive" }, Topology.Parallel, 1);
        using var loop = new UNet3D(B, Micro with { Bridge = "loop" }, Topology.Parallel, 1);
        var names = t2i.NamedParameters().Select(n => n.Name).ToList();
        Assert.Equal(names, serial.SpatialParameters().Select(n => n.Name));
        Assert.Equal(names, parallel.SpatialParameters().Select(n => n.Name));
        Assert.Equal(names, loop.SpatialParameters().Select(n => n.Name));
        Assert.Empty(t2i.TemporalParameters());
        Assert.Contains(parallel.TemporalParameters(), n => n.Name.StartsWith("bridge.", StringComparison.Ordinal));

        // The loop trains exactly serial's temporal layers: no ring adapters, no fuse.
        Assert.Equal(serial.TemporalParameters().Select(n => n.Name), loop.TemporalParameters().Select(n => n.Name));
        Assert.Null(loop.Bridge);
    }
}

public sealed class CpuUNet3DTests(CpuFixture f) : UNet3DTests(f), IClassFixture<CpuFixture>;
public sealed class CudaUNet3DTests(CudaFixture f) : UNet3DTests(f), IClassFixture<CudaFixture>;
