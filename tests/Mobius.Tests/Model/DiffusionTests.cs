using Mobius.Engine;
using Mobius.Model.Diffusion;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>The noise schedule and the DDIM sampler against closed forms and an oracle denoiser.</summary>
public abstract class DiffusionTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    [Fact]
    public void The_schedule_is_linear_in_beta_from_0_00085_to_0_012()
    {
        var s = new NoiseSchedule();
        Assert.Equal(1 - 0.00085, s.AlphasCumprod[0], 12);
        double prod = 1;
        for (int t = 0; t < 1000; t++)
        {
            prod *= 1 - (0.00085 + (0.012 - 0.00085) * t / 999.0);
        }

        Assert.Equal(prod, s.AlphasCumprod[999], 12);
        Assert.Equal([960, 920, 880], s.DdimTimesteps(25)[..3]);
        Assert.Equal(0, s.DdimTimesteps(25)[^1]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(10)]
    [InlineData(50)]
    public void Ddim_with_an_oracle_denoiser_returns_the_data(int steps)
    {
        // For one known x0, the exact noise of x_t is (x_t - sqrt(abar) x0) / sqrt(1 - abar); DDIM with it
        // must land on x0 from any starting noise.
        var r = new Rng(Seeds.One + steps);
        var schedule = new NoiseSchedule();
        var shape = new Shape(2, 3, 4, 4);
        var x0 = r.Uniform(shape.Numel, 2f);
        using var x0t = Tensor.FromArray(B, x0, shape);
        Tensor Oracle(Tensor x, int t)
        {
            double ab = schedule.AlphasCumprod[t];
            return Ops.Combine(x, x0t, (float)(1 / Math.Sqrt(1 - ab)), (float)(-Math.Sqrt(ab) / Math.Sqrt(1 - ab)));
        }

        var got = new DdimSampler(schedule).Sample(B, shape, Oracle, steps, r.Seed);

        // Dividing by sqrt(abar) ~ 0.04 at the first step amplifies fp32 rounding about 25 times.
        Close.All(got, x0, 2e-4, 1e-4, $"DDIM {steps} steps ({r})");
    }
}

public sealed class CpuDiffusionTests(CpuFixture f) : DiffusionTests(f), IClassFixture<CpuFixture>;
public sealed class CudaDiffusionTests(CudaFixture f) : DiffusionTests(f), IClassFixture<CudaFixture>;
