using Mobius.Cuda;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Tests.Engine;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// The CUDA norms' backward with an addend (a residual's gradient added in the same pass): the bits of a separate
/// addition in every launch shape (one pass; reduce then dx; each group cut into chunks), and one launch fewer per
/// residual in a step.
/// </summary>
public sealed class CudaNormAddendTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    [Theory]
    [InlineData(true, 0)]
    [InlineData(false, 0)]
    [InlineData(false, 2)]
    public void Norm_backward_adds_the_addend_as_adding_afterwards_does(bool onePass, int minChunk)
    {
        int chunk = B.GroupNormMinChunk;
        B.GroupNormOnePass = onePass;
        if (minChunk > 0)
        {
            B.GroupNormMinChunk = minChunk;
        }

        try
        {
            var shape = new GroupNormShape(1, 3, 8, 12, 2, 1e-5f);
            if (minChunk > 0)
            {
                Assert.True(B.GroupNormSplits(shape.N * shape.Groups, (long)shape.T * (shape.C / shape.Groups) * shape.S) > 1, "the groups must be cut into chunks");
            }

            NormAddendTests.CheckBackwardAddsTheAddend(B, new Rng(Seeds.One + 41 + minChunk), shape);
        }
        finally
        {
            B.GroupNormOnePass = true;
            B.GroupNormMinChunk = chunk;
        }
    }

    [Fact]
    public void A_residual_around_a_norm_takes_no_separate_addition_in_backward()
    {
        var r = new Rng(Seeds.One + 42);
        using var x = Tensor.FromArray(B, r.Uniform(2 * 8 * 6), new Shape(2, 8, 6)).SetRequiresGrad();
        using var gamma = Tensor.FromArray(B, r.Uniform(8), new Shape(8));
        using var beta = Tensor.FromArray(B, r.Uniform(8), new Shape(8));
        using var tape = Tape.Begin();
        using var h = Ops.Scale(x, 2f);
        using var n = Ops.GroupNorm(h, gamma, beta, groups: 4);
        using var y = Ops.Add(h, n);
        using var loss = Ops.Sum(y);
        B.ResetCallCounts();
        loss.Backward();
        Assert.Equal(0, B.CallCounts.GetValueOrDefault("ew_add_f32"));
        Assert.True(x.Grad!.ToArray().Any(v => v != 0f), "x has a gradient");
    }
}
