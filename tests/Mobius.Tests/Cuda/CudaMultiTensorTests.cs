using Mobius.Cuda;
using Mobius.Engine;
using Mobius.Engine.Optim;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// The CUDA backend steps every trainable tensor in one launch (adamw_multi_f32) and sums the squares of every
/// gradient in one more (sumsq_multi_partial_f32), where it used one launch per tensor for the step and two for
/// the norm: a model has hundreds of tensors, most of them small, and those launches were a third of a small
/// model's. These check the multi-tensor kernels against the per-tensor ones bit for bit and against fp64, with
/// the chunk size lowered so that tensors are cut into several chunks (the last one short), and count the
/// launches of an optimiser step. The class has its own backend instance, so the setting reaches no other test.
/// </summary>
public sealed class CudaMultiTensorTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    private static readonly int[] Sizes = [1, 7, 300, 1000, 4099, 64];

    private T WithChunk<T>(long chunk, Func<T> run)
    {
        long before = B.MultiTensorChunk;
        B.MultiTensorChunk = chunk;
        try
        {
            return run();
        }
        finally
        {
            B.MultiTensorChunk = before;
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(256, 2)]
    [InlineData(1 << 16, 3)]
    public void One_launch_for_every_tensor_gives_the_bits_of_one_launch_each(int chunk, int seed)
    {
        var r = new Rng(Seeds.One * 17 + seed);
        var args = new AdamWStepArgs(Lr: 0.01f * r.Int(1, 5), Beta1: 0.9f, Beta2: 0.99f, Eps: 1e-8f, WeightDecay: 0.05f, Step: r.Int(1, 40), GradScale: 0.7f);
        var data = Sizes.Select(n => (P: r.Uniform(n), G: r.Uniform(n, 3f), M: r.Uniform(n, 0.1f), V: r.Uniform(n, 0.01f).Select(MathF.Abs).ToArray())).ToList();
        var one = data.Select(d => Upload(d.P, d.G, d.M, d.V)).ToList();
        var many = data.Select(d => Upload(d.P, d.G, d.M, d.V)).ToList();
        try
        {
            foreach (var t in one)
            {
                B.AdamWStep(t.Param, t.Grad, t.M, t.V, args);
            }

            WithChunk(chunk, () =>
            {
                ((IBackend)B).AdamWStep(many, args);
                return 0;
            });
            for (int i = 0; i < Sizes.Length; i++)
            {
                Assert.Equal(one[i].Param.ToArray(), many[i].Param.ToArray());
                Assert.Equal(one[i].M.ToArray(), many[i].M.ToArray());
                Assert.Equal(one[i].V.ToArray(), many[i].V.ToArray());
                Assert.NotEqual(data[i].P, many[i].Param.ToArray());           // the step moved every tensor
            }
        }
        finally
        {
            foreach (var t in one.Concat(many))
            {
                t.Param.Dispose();
                t.Grad.Dispose();
                t.M.Dispose();
                t.V.Dispose();
            }
        }
    }

    private AdamWTensors Upload(float[] p, float[] g, float[] m, float[] v) =>
        new(Tensor.FromArray(B, p, new Shape(p.Length)), Tensor.FromArray(B, g, new Shape(g.Length)),
            Tensor.FromArray(B, m, new Shape(m.Length)), Tensor.FromArray(B, v, new Shape(v.Length)));

    [Theory]
    [InlineData(1)]
    [InlineData(256)]
    [InlineData(1 << 16)]
    public void One_launch_sums_the_squares_of_every_tensor(int chunk)
    {
        var r = new Rng(Seeds.One * 19 + chunk);
        var data = Sizes.Select(n => r.Uniform(n, 2f)).ToList();
        var xs = data.Select(d => Tensor.FromArray(B, d, new Shape(d.Length))).ToList();
        using var acc = Tensor.FromArray(B, [1.5f], new Shape(1));                     // accumulates onto what is there
        try
        {
            float sum = WithChunk(chunk, () =>
            {
                ((IBackend)B).SumSquaresAccumulate(xs, acc);
                return acc.Item();
            });
            double expected = 1.5 + data.Sum(d => d.Sum(v => (double)v * v));
            Assert.True(Math.Abs(sum - expected) <= 1e-5 * expected, $"{sum} vs {expected}");
        }
        finally
        {
            xs.ForEach(x => x.Dispose());
        }
    }

    [Fact]
    public void An_optimiser_step_with_clipping_is_three_launches_whatever_the_tensors()
    {
        var r = new Rng(Seeds.One * 23);
        var parameters = Enumerable.Range(0, 12).Select(i => ($"p{i}", Parameter.Create(B, $"p{i}", new Shape(i + 5), r.Uniform(i + 5)))).ToList();
        try
        {
            foreach (var (_, p) in parameters)
            {
                p.Grad = Tensor.FromArray(B, r.Uniform(p.Numel), p.Shape);
            }

            using var opt = new AdamW(parameters);
            B.ResetCallCounts();
            float norm = opt.Step(maxGradNorm: 0.1f);
            Assert.True(norm > 0.1f);
            var calls = B.CallCounts;
            Assert.Equal(1, calls.GetValueOrDefault("sumsq_multi_partial_f32"));
            Assert.Equal(1, calls.GetValueOrDefault("reduce_finish_f32"));
            Assert.Equal(1, calls.GetValueOrDefault("adamw_multi_f32"));
            Assert.Equal(0, calls.GetValueOrDefault("adamw_f32"));
            Assert.Equal(3, calls.Values.Sum());
        }
        finally
        {
            parameters.ForEach(p => p.Item2.Dispose());
        }
    }
}
