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

    [Theory]
    [InlineData(0f)]
    [InlineData(0.5f)]
    [InlineData(0.9f)]
    public void Clip_noise_is_unit_normal_per_frame_and_correlated_across_frames_as_asked(float rho)
    {
        // 64 clips of 4 frames of 512 values: each frame's values must have unit variance, and any two frames
        // of a clip the asked correlation; pairs of frames of different clips none. The tolerances are about
        // five standard errors of the estimates over 32,768 pairs.
        int seed = Seeds.One + (int)(rho * 10);
        const int clips = 64, frames = 4, size = 512;
        var noise = NoiseSchedule.ClipNoise(new Random(seed), clips, frames, size, rho);
        double sumSq = 0, within = 0, across = 0;
        for (int c = 0; c < clips; c++)
        {
            for (int i = 0; i < size; i++)
            {
                double a = noise[(c * frames) * size + i], b = noise[(c * frames + frames - 1) * size + i];
                double other = noise[(((c + 1) % clips) * frames + 1) * size + i];
                sumSq += a * a;
                within += a * b;
                across += a * other;
            }
        }

        int n = clips * size;
        Assert.InRange(sumSq / n, 0.96, 1.04);
        Assert.InRange(within / n, rho - 0.04, rho + 0.04);
        Assert.InRange(across / n, -0.04, 0.04);
    }
}

public sealed class CpuDiffusionTests(CpuFixture f) : DiffusionTests(f), IClassFixture<CpuFixture>;
public sealed class CudaDiffusionTests(CudaFixture f) : DiffusionTests(f), IClassFixture<CudaFixture>;
