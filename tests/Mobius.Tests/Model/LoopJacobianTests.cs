using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Model;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>
/// The loop bridge's measured mean-field Jacobians (experimental, <see cref="LoopJacobian"/>): the estimator against a
/// layer that is exactly its model and the gradient path against a host computation, on both backends
/// (<see cref="LoopJacobianModelTests"/> has the loop with them on micro).
/// </summary>
public abstract class LoopJacobianTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    /// <summary>
    /// y_t = A x_t + B mean_t'(x_t') for every image, as one dense [Cout T, Cin T] matrix on the image's
    /// channel-major vector: an implementation that shares nothing with <see cref="LoopJacobian.Path"/>.
    /// </summary>
    private Tensor DenseLayer(Tensor x, float[] a, float[] b, int cin, int cout, int pixels)
    {
        var m = new float[cout * pixels * cin * pixels];
        for (int o = 0; o < cout; o++)
        {
            for (int t = 0; t < pixels; t++)
            {
                for (int i = 0; i < cin; i++)
                {
                    for (int u = 0; u < pixels; u++)
                    {
                        m[((o * pixels) + t) * cin * pixels + i * pixels + u] = (t == u ? a[o * cin + i] : 0f) + b[o * cin + i] / pixels;
                    }
                }
            }
        }

        int n = x.Shape[0], h = x.Shape[2], w = x.Shape[3];
        using var dense = Tensor.FromArray(B, m, new Shape(cout * pixels, cin * pixels));
        using var flat = Ops.Reshape(x, n, cin * pixels);
        using var y = Ops.Linear(flat, dense);
        return Ops.Reshape(y, n, cout, h, w);
    }

    private static double RelativeError(float[] got, float[] want) =>
        Math.Sqrt(got.Zip(want, (g, w) => (double)(g - w) * (g - w)).Sum() / want.Sum(w => (double)w * w));

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Measures_a_layer_that_is_its_own_mean_field_model(int seed)
    {
        var r = new Rng(seed);
        int cin = r.Int(2, 4), cout = r.Int(2, 5), side = 4, pixels = side * side, images = 8;
        var a = r.Uniform(cout * cin);
        var b = r.Uniform(cout * cin);
        using var withMean = new LoopJacobian(cin, cout, seed, imageMean: true);
        using var ownOnly = new LoopJacobian(cin, cout, seed + 1, imageMean: false);
        using (var tape = Tape.Begin())
        {
            for (int k = 0; k < 400; k++)
            {
                using var x = Tensor.FromArray(B, r.Uniform((long)images * cin * pixels), new Shape(images, cin, side, side));
                withMean.Probe(x, t => DenseLayer(t, a, b, cin, cout, pixels));
                ownOnly.Probe(x, t => DenseLayer(t, a, b, cin, cout, pixels));
            }
        }

        withMean.Finish(B);
        ownOnly.Finish(B);

        // 51,200 pixels and 3,200 images of probes: the pixel estimate is within about 1 % (150 probes: at most 1.6 % in
        // 21 runs), the image one about 6 % (150 probes: at most 15 %).
        Assert.True(RelativeError(withMean.Weight!.ToArray(), a) < 0.05, $"A off by {RelativeError(withMean.Weight!.ToArray(), a):0.000}");
        Assert.True(RelativeError(withMean.ImageMean!.ToArray(), b) < 0.2, $"B off by {RelativeError(withMean.ImageMean!.ToArray(), b):0.000}");

        // Without the image mean, the matrix is a pixel's own Jacobian, A + B / T, and nothing else is fitted.
        var own = a.Zip(b, (x, y) => x + y / pixels).ToArray();
        Assert.Null(ownOnly.ImageMean);
        Assert.True(RelativeError(ownOnly.Weight!.ToArray(), own) < 0.05, $"A + B/T off by {RelativeError(ownOnly.Weight!.ToArray(), own):0.000}");
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void The_path_passes_A_transposed_plus_B_transposed_of_the_mean_gradient(int seed)
    {
        var r = new Rng(seed);
        int cin = r.Int(2, 4), cout = r.Int(2, 4), n = 3, side = r.Int(2, 4), pixels = side * side;
        var a = r.Uniform(cout * cin);
        var b = r.Uniform(cout * cin);
        using var jacobian = new LoopJacobian(cin, cout, seed, imageMean: true);
        using (Tape.Begin())
        {
            using var probe = Tensor.FromArray(B, r.Uniform((long)n * cin * pixels), new Shape(n, cin, side, side));
            jacobian.Probe(probe, t => DenseLayer(t, a, b, cin, cout, pixels));
        }

        jacobian.Finish(B);
        var am = jacobian.Weight!.ToArray();
        var bm = jacobian.ImageMean!.ToArray();

        var dy = r.Uniform((long)n * cout * pixels);
        float[] got;
        using (var tape = Tape.Begin())
        {
            using var h = Tensor.FromArray(B, r.Uniform((long)n * cin * pixels), new Shape(n, cin, side, side)).SetRequiresGrad();
            using var path = jacobian.Path(h);
            using var seedGrad = Tensor.FromArray(B, dy, path.Shape);
            tape.Backward(path, seedGrad);
            got = h.Grad!.ToArray();
            h.ClearGrad();
        }

        for (int img = 0; img < n; img++)
        {
            for (int i = 0; i < cin; i++)
            {
                double mixed = 0;
                for (int o = 0; o < cout; o++)
                {
                    double mean = 0;
                    for (int t = 0; t < pixels; t++)
                    {
                        mean += dy[(img * cout + o) * pixels + t];
                    }

                    mixed += bm[o * cin + i] * mean / pixels;
                }

                for (int t = 0; t < pixels; t++)
                {
                    double want = mixed;
                    for (int o = 0; o < cout; o++)
                    {
                        want += am[o * cin + i] * dy[(img * cout + o) * pixels + t];
                    }

                    Assert.True(Math.Abs(got[(img * cin + i) * pixels + t] - want) <= 1e-5 * (1 + Math.Abs(want)),
                        $"dx[{img}, {i}, {t}] = {got[(img * cin + i) * pixels + t]}, want {want}");
                }
            }
        }
    }
}

public sealed class CpuLoopJacobianTests(CpuFixture f) : LoopJacobianTests(f), IClassFixture<CpuFixture>;

public sealed class CudaLoopJacobianTests(CudaFixture f) : LoopJacobianTests(f), IClassFixture<CudaFixture>;

/// <summary>
/// The loop with measured Jacobians on the micro model, on the CPU backend only: it composes ops the CUDA tests cover
/// one by one, and on the simulated driver its four training passes take a quarter of a minute of CI.
/// </summary>
public sealed class LoopJacobianModelTests(CpuFixture fixture) : IClassFixture<CpuFixture>
{
    private IBackend B => fixture.Backend;

    [Fact]
    public void The_loop_with_measured_Jacobians_keeps_serial_values_and_no_spatial_activation()
    {
        var r = new Rng(Seeds.One);
        var micro = ModelConfig.Get("micro");
        using var t2i = new UNet3D(B, micro, Topology.Spatial, r.Seed);
        using var loop = new UNet3D(B, micro with { Bridge = "loop" }, Topology.Parallel, r.Seed + 1);
        loop.LoadStateDict(t2i.StateDict(), strict: false);
        loop.FreezeSpatial();
        loop.LoadStateDict(loop.TemporalParameters().ToDictionary(np => np.Name, np => r.Uniform(np.Parameter.Shape.Numel, 0.1f)), strict: false);

        int images = micro.Batch * micro.Frames;
        var xShape = new Shape(images, micro.LatentChannels, micro.LatentHeight, micro.LatentWidth);
        using var x = Tensor.FromArray(B, r.Uniform(xShape.Numel), xShape);
        using var target = Tensor.FromArray(B, r.Uniform(xShape.Numel), xShape);
        using var context = Tensor.FromArray(B, r.Uniform((long)images * micro.TokenLength * micro.TextWidth), new Shape(images, micro.TokenLength, micro.TextWidth));
        var timesteps = Enumerable.Range(0, micro.Batch).SelectMany(_ => Enumerable.Repeat(r.Int(0, 999), micro.Frames)).ToArray();

        (float[] Y, float[] Grad, long SpatialSaved) Step()
        {
            using var tape = Tape.Begin();
            using var y = loop.Forward(x, timesteps, context, micro.Frames);
            long spatial = tape.StatsByKind.Where(kv => kv.Key is "ResBlock2D" or "SpatialTransformer").Sum(kv => kv.Value.SavedBytes);
            using (var loss = Ops.MseLoss(y, target))
            {
                loss.Backward();
            }

            var grad = loop.TemporalParameters().SelectMany(np => np.Parameter.Grad!.ToArray()).ToArray();
            foreach (var (_, p) in loop.TemporalParameters())
            {
                p.ClearGrad();
            }

            return (y.ToArray(), grad, spatial);
        }

        var plain = Step();
        loop.BeginLoopJacobians(LoopBypass.All, r.Seed, imageMean: true);
        Step();
        loop.EndLoopJacobians();
        Assert.All(loop.Blocks, b => Assert.NotNull(b.ResJacobian?.Weight));
        var measured = Step();
        loop.DropLoopJacobians();
        var again = Step();

        Assert.Equal(plain.Y, measured.Y); // the forward is serial's, bit for bit, either way
        Assert.Equal(0, plain.SpatialSaved);
        Assert.Equal(0, measured.SpatialSaved);
        Assert.NotEqual(plain.Grad, measured.Grad); // the gradient crosses the measured matrices instead of the skips
        Assert.Equal(plain.Grad, again.Grad); // and dropping them restores the plain loop
    }
}
