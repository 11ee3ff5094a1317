using Mobius.Engine;
using Mobius.Engine.Autograd;

namespace Mobius.Model.Diffusion;

/// <summary>Predicts the noise in latents <c>x</c> at diffusion step <c>t</c>; returns a new tensor.</summary>
public delegate Tensor Denoiser(Tensor x, int t);

/// <summary>
/// Deterministic DDIM sampling (eta = 0): from Gaussian noise, at each of the chosen timesteps
/// x0 = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t) and x' = sqrt(abar_t') x0 + sqrt(1 - abar_t') eps.
/// </summary>
public sealed class DdimSampler(NoiseSchedule schedule)
{
    /// <summary>
    /// Denoises Gaussian noise of <paramref name="shape"/> (drawn from <paramref name="seed"/>; the frames
    /// of each clip of <paramref name="frames"/> images correlated as <see cref="NoiseSchedule.ClipNoise"/>
    /// says) in <paramref name="steps"/> steps.
    /// </summary>
    public float[] Sample(IBackend backend, Shape shape, Denoiser denoise, int steps, int seed, IProgress<int>? progress = null,
        int frames = 1, float noiseCorrelation = 0f)
    {
        using var noGrad = Tape.NoGrad();
        int imageSize = (int)(shape.Numel / shape[0]);
        var start = NoiseSchedule.ClipNoise(new Random(seed), shape[0] / frames, frames, imageSize, noiseCorrelation);
        var x = Tensor.FromArray(backend, start, shape);
        var timesteps = schedule.DdimTimesteps(steps);
        try
        {
            for (int i = 0; i < timesteps.Length; i++)
            {
                int t = timesteps[i];
                double ab = schedule.AlphasCumprod[t];
                double abPrev = i + 1 < timesteps.Length ? schedule.AlphasCumprod[timesteps[i + 1]] : 1.0;
                using var eps = denoise(x, t);
                using var x0 = Ops.Combine(x, eps, (float)(1 / Math.Sqrt(ab)), (float)(-Math.Sqrt(1 - ab) / Math.Sqrt(ab)));
                var next = Ops.Combine(x0, eps, (float)Math.Sqrt(abPrev), (float)Math.Sqrt(1 - abPrev));
                x.Dispose();
                x = next;
                progress?.Report(i + 1);
            }

            return x.ToArray();
        }
        finally
        {
            x.Dispose();
        }
    }

    /// <summary>
    /// A denoiser with classifier-free guidance: the conditional and unconditional predictions run as
    /// one batch, eps = eps_u + g (eps_c - eps_u). Contexts are [images, L, D].
    /// </summary>
    public static Denoiser Guided(UNet3D unet, Tensor cond, Tensor uncond, int frames, float guidance) => (x, t) =>
    {
        int images = x.Dim(0);
        using var context = Ops.Concat(0, cond, uncond);
        using var doubled = Ops.Concat(0, x, x);
        using var both = unet.Forward(doubled, Enumerable.Repeat(t, 2 * images).ToArray(), context, frames);
        using var c = Ops.Narrow(both, 0, 0, images);
        using var u = Ops.Narrow(both, 0, images, images);
        return Ops.Combine(u, c, 1 - guidance, guidance);
    };
}
